"""The forwarder's own record of what it did: one receipt per group, in S3 beside the landing files.

A receipt lists the SQS message ids of the records Firehose accepted (with each one's original
message id, which differs for a re-injected copy) and the messages rejected for their content. It is
written after Firehose accepted the group and before the messages are deleted, so every message that
was deleted from the queue has a receipt: a forwarder that dies in between leaves its messages on the
queue, and their next forward writes one. Receipts are the ground truth the message reconciliation
(:mod:`wap_pipeline.rules.accounting`) holds the landed rows against -- no ledger kept by the sender.

Keys are ``<prefix>YYYY/MM/DD/HH/<forwarded_at>-<uuid>.json`` (UTC), so a time window is one listing
that starts at its first hour folder. Outside the landing prefix: S3 announces no receipt to the
landing sensor.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from wap_pipeline.ingest.landing import list_objects
from wap_pipeline.rules.envelope import Rejection


@dataclass(frozen=True)
class ForwardReceipt:
    forwarded_at: datetime
    forwarded: dict[str, str] = field(default_factory=dict)
    """message id -> original message id of every record Firehose accepted."""
    rejected: tuple[Rejection, ...] = ()

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "forwarded_at": self.forwarded_at.isoformat(),
                "forwarded": self.forwarded,
                "rejected": [[r.message_id, r.receive_count, r.reason] for r in self.rejected],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ForwardReceipt:
        document = orjson.loads(data)
        return cls(
            datetime.fromisoformat(document["forwarded_at"]),
            dict(document["forwarded"]),
            tuple(Rejection(*item) for item in document["rejected"]),
        )


def _hour_folder(prefix: str, at: datetime) -> str:
    return f"{prefix}{at.astimezone(UTC):%Y/%m/%d/%H}/"


@dataclass(frozen=True)
class ReceiptLog:
    s3: object
    bucket: str
    prefix: str

    def write(self, receipt: ForwardReceipt) -> None:
        at = receipt.forwarded_at.astimezone(UTC)
        key = f"{_hour_folder(self.prefix, at)}{at:%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:12]}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=receipt.to_json())

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[ForwardReceipt]:
        """The receipts written in [since, until] (either end open when None), oldest first."""
        start_after = _hour_folder(self.prefix, since) if since is not None else None
        keys = [o.key for o in list_objects(self.s3, self.bucket, self.prefix, start_after)]
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="receipt-get") as pool:
            receipts = list(
                pool.map(
                    lambda key: ForwardReceipt.from_json(
                        self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    ),
                    keys,
                )
            )
        return sorted(
            (
                r
                for r in receipts
                if (since is None or r.forwarded_at >= since) and (until is None or r.forwarded_at <= until)
            ),
            key=lambda r: r.forwarded_at,
        )


def receipt_log(s3, settings) -> ReceiptLog:
    """The project's receipt log: ``WAP_FORWARD_RECEIPTS_PREFIX`` in the landing bucket."""
    return ReceiptLog(s3, settings.landing_bucket, settings.forward_receipts_prefix)
