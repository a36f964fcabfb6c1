"""What a user asks about first: where every message is, overall and per batch, and whether the
accounting identity holds.

Per batch (from the snapshot summaries each layer commits, and the batch's latest audit branch; a
batch whose later commits were expired by maintenance is listed as such -- its identity was checked
when it was committed, by the blocking checks):

    landed (raw rows) = quarantined (masked) + published to standardized       once published
    published         = inserted + superseded + skipped as duplicates          once curated

Overall, two ways, both with nothing left in the queue and every batch's identity holding:

* **From the pipeline's own records** (always computed; the identity under ``WAP_PROFILE=aws`` and
  wherever no sender's ledger exists): per message id, what the forwarder's receipts say it forwarded
  landed, and what landed was published or masked by the quarantine
  (:mod:`wap_pipeline.rules.accounting`); every message rejected for its content and never fixed is in
  the DLQ or was purged from it. On AWS over the last ``WAP_RECONCILE_WINDOW_HOURS``, locally over all.
* **Against the local ledger** `wap-pipeline send` keeps (the local default, when it exists; checked
  in addition to the first): every
  message sent (a re-injected replay is not a new message) is in exactly one final place -- curated,
  the quarantine (quarantined ids whose fixed replay is not in curated; a replay in curated counts
  once, in curated), the DLQ, or purged from the DLQ by an operator (a recorded decision: the operator
  audit log lists every purged message id).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
from pyiceberg.expressions import In
from pyiceberg.table import Table

from wap_pipeline import aws
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import load_tables
from wap_pipeline.ingest import reconcile
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.ingest.landing import list_objects
from wap_pipeline.operations.audit_log import AuditLog
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.rules.accounting import MessageAccount
from wap_pipeline.rules.quarantine import RECORD_ID_COLUMN
from wap_pipeline.settings import Settings
from wap_pipeline.state import NOT_NEW_MESSAGES, has_sent_ledger, sent_counts


@dataclass
class BatchAccount:
    batch_id: str
    landed: int
    quarantined: int | None = None
    invalid: int | None = None
    published: int | None = None
    inserted: int | None = None
    superseded: int | None = None
    skipped: int | None = None
    history_expired: bool = False
    unauthorized_replays: int | None = None
    """Rows claiming to be replays without data-patcher's grant (treated as not replays)."""

    @property
    def state(self) -> str:
        if self.history_expired:
            return "curated (commits expired)"
        if self.inserted is not None:
            return "curated"
        if self.published is not None:
            return "published, not yet curated"
        if self.invalid:
            return "failed audit"
        return "pending"

    @property
    def identity_holds(self) -> bool:
        """Every row of the batch is accounted for at each layer it has reached."""
        if self.history_expired:
            return True  # the per-batch counts are gone; the overall identity still holds or not
        if self.published is None:
            return False
        if self.landed != (self.quarantined or 0) + self.published:
            return False
        if self.inserted is None:
            return False
        return self.published == self.inserted + (self.superseded or 0) + (self.skipped or 0)

    def as_dict(self) -> dict:
        return {**asdict(self), "state": self.state, "identity_holds": self.identity_holds}


@dataclass
class Status:
    messages_sent: int
    files_landed: int
    raw_rows: int
    standardized_rows: int
    curated_rows: int
    queue_depth: int
    queue_in_flight: int
    dlq_depth: int
    breaker: str
    breaker_reason: str
    quarantined: int
    quarantined_replayed: int
    dlq_purged: int
    batches_published: int
    bookmark: dict | None
    messages: MessageAccount
    """The reconciliation from the pipeline's own records (forwarder receipts, raw, standardized)."""
    rejected_unplaced: int
    """Rejected messages (never fixed) neither purged nor possibly in the DLQ: more than it holds."""
    sent_ledger: bool
    """Whether a sender's ledger exists (local): the overall identity is then checked against it too."""
    batches: list[BatchAccount] = field(default_factory=list)

    @property
    def masked_rows(self) -> int:
        return sum(b.quarantined or 0 for b in self.batches)

    @property
    def unauthorized_replays(self) -> int:
        return sum(b.unauthorized_replays or 0 for b in self.batches)

    @property
    def invalid_rows(self) -> int:
        return sum(b.invalid or 0 for b in self.batches if b.published is None)

    @property
    def accounted(self) -> int:
        """Sent messages that are somewhere final: curated, the DLQ (or purged from it, recorded), or
        the quarantine (without a replay in curated -- that one is counted in curated)."""
        return (
            self.curated_rows
            + self.dlq_depth
            + self.dlq_purged
            + self.quarantined
            - self.quarantined_replayed
        )

    @property
    def records_identity_holds(self) -> bool:
        """Every message is accounted for by the pipeline's own records."""
        return (
            self.queue_depth == 0
            and self.queue_in_flight == 0
            and self.messages.holds
            and self.rejected_unplaced == 0
            and all(b.identity_holds for b in self.batches)
        )

    @property
    def identity_holds(self) -> bool:
        """The records' identity; with a sender's ledger, also the count against it."""
        return self.records_identity_holds and (not self.sent_ledger or self.accounted == self.messages_sent)

    def as_dict(self) -> dict:
        document = asdict(self)
        document["batches"] = [b.as_dict() for b in self.batches]
        document["messages"] = self.messages.as_dict()
        return {
            **document,
            "masked_rows": self.masked_rows,
            "unauthorized_replays": self.unauthorized_replays,
            "invalid_rows": self.invalid_rows,
            "accounted": self.accounted,
            "records_identity_holds": self.records_identity_holds,
            "identity_holds": self.identity_holds,
        }


def _summary_int(snapshot, key: str) -> int | None:
    if snapshot is None or snapshot.summary is None or snapshot.summary.get(key) is None:
        return None
    return int(snapshot.summary.get(key))


def batch_accounts(tables: dict[str, Table]) -> list[BatchAccount]:
    """One account per batch that reached raw, oldest first."""
    raw, standardized, curated = tables["raw"], tables["standardized"], tables["curated"]
    accounts = []
    for batch_id in wap.published_batches(raw):
        account = BatchAccount(
            batch_id, _summary_int(wap.published_snapshot(raw, batch_id), "added-records") or 0
        )
        published = wap.published_snapshot(standardized, batch_id)
        if published is not None:
            # An empty append (every record of the batch quarantined) has no added-records: 0 published.
            account.published = _summary_int(published, "added-records") or 0
            account.quarantined = _summary_int(published, wap.QUARANTINED_ROWS_PROPERTY) or 0
            account.unauthorized_replays = _summary_int(published, wap.UNAUTHORIZED_REPLAYS_PROPERTY) or 0
            account.invalid = 0
        else:
            branches = wap.branches_of_batch(standardized, batch_id)
            if branches:
                latest = standardized.metadata.snapshot_by_id(
                    standardized.metadata.refs[branches[-1]].snapshot_id
                )
                account.quarantined = _summary_int(latest, wap.QUARANTINED_ROWS_PROPERTY)
                account.unauthorized_replays = _summary_int(latest, wap.UNAUTHORIZED_REPLAYS_PROPERTY)
                flags = wap.scan_batch(standardized, branches[-1], batch_id, ("invalid_flag",))[
                    "invalid_flag"
                ]
                account.invalid = int(pc.sum(pc.cast(flags, "int64")).as_py() or 0)
        merged = wap.batch_snapshots(curated, batch_id)
        if (published is None or not merged) and all(
            wap.is_published(t, batch_id) for t in (standardized, curated)
        ):
            account.history_expired = True
        if merged:
            last = merged[-1]
            account.inserted = _summary_int(last, wap.CURATED_INSERTED)
            account.superseded = _summary_int(last, wap.CURATED_SUPERSEDED)
            account.skipped = _summary_int(last, wap.CURATED_SKIPPED)
        accounts.append(account)
    return accounts


def quarantined_in_curated(curated: Table, ids: set[str]) -> int:
    """How many quarantined ids have a (replayed) row in curated."""
    if not ids or curated.current_snapshot() is None:
        return 0
    found = curated.scan(
        row_filter=In(RECORD_ID_COLUMN, list(ids)), selected_fields=(RECORD_ID_COLUMN,)
    ).to_arrow()
    return len(pc.unique(found[RECORD_ID_COLUMN]))


def collect(settings: Settings, now: datetime | None = None) -> Status:
    now = now or datetime.now(UTC)
    tables = load_tables(load_wap_catalog(settings))
    sqs = aws.client("sqs", settings)
    visible, in_flight = sqs_calls.depth(sqs, queue_url(sqs, settings.queue_name))
    dlq_visible, dlq_in_flight = sqs_calls.depth(sqs, queue_url(sqs, settings.dlq_name))
    dynamodb = aws.client("dynamodb", settings)
    breaker = CircuitBreaker(dynamodb, settings.breaker_table, settings.pipeline_name).state()
    landed = list_objects(aws.client("s3", settings), settings.landing_bucket, settings.landing_prefix)
    quarantined = Quarantine(dynamodb, settings.quarantine_table).ids()
    sent = sent_counts(settings)
    purged = {
        message_id
        for entry in AuditLog(dynamodb, settings.audit_table).entries()
        if entry.action == "dlq.purge"
        for message_id in entry.details.get("message_ids", [])
    }
    messages = reconcile.messages(
        aws.client("s3", settings),
        tables["raw"],
        tables["standardized"],
        quarantined,
        settings,
        now,
        # Locally everything since the first receipt, and nothing is still in a Firehose buffer (the local
        # server delivers at once); on AWS the reconciliation's window and grace period.
        None if settings.is_local else now - timedelta(hours=settings.reconcile_window_hours),
        timedelta(0) if settings.is_local else None,
    )
    return Status(
        messages_sent=sum(count for kind, count in sent.items() if kind not in NOT_NEW_MESSAGES),
        files_landed=len(landed),
        raw_rows=wap.row_count(tables["raw"]),
        standardized_rows=wap.row_count(tables["standardized"]),
        curated_rows=wap.row_count(tables["curated"]),
        queue_depth=visible,
        queue_in_flight=in_flight,
        dlq_depth=dlq_visible + dlq_in_flight,
        breaker=breaker.status,
        breaker_reason=breaker.reason,
        quarantined=len(quarantined),
        quarantined_replayed=quarantined_in_curated(tables["curated"], set(quarantined)),
        dlq_purged=len(purged),
        batches_published=len(wap.published_batches(tables["standardized"])),
        bookmark=wap.bookmark(tables["standardized"]),
        messages=messages,
        rejected_unplaced=max(0, len(set(messages.rejected) - purged) - (dlq_visible + dlq_in_flight)),
        sent_ledger=settings.is_local and has_sent_ledger(settings),
        batches=batch_accounts(tables),
    )
