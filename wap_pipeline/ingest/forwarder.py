"""Forward SQS messages to Firehose without losing or silently dropping any.

* Every body is parsed. A body that is not a JSON object (or is too large or too deeply nested) is
  never forwarded and never deleted: it returns to the queue after the visibility timeout, and after
  the redrive policy's max receives SQS itself moves it to the DLQ. Each rejection is returned in
  the stats (message id, receive count, reason) for the caller to log once.
* A message is deleted only after Firehose accepted its record. ``PutRecordBatch`` partial failures
  (``FailedPutCount`` > 0) are resent -- only the failed records -- with exponential backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wap_pipeline.faults import fault_point
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.rules.envelope import (
    DEFAULT_LIMITS,
    PayloadLimits,
    Rejection,
    landing_line,
    to_landing_record,
)

log = logging.getLogger(__name__)

FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_BATCH_BYTES = 4 * 1024 * 1024
FIREHOSE_MAX_RECORD_BYTES = 1000 * 1024


class PartialFailureError(RuntimeError):
    """Firehose kept refusing some records after every resend."""


@dataclass
class ForwardStats:
    received: int = 0
    forwarded: int = 0
    deleted: int = 0
    rejected: int = 0
    resent: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def add(self, other: ForwardStats) -> None:
        self.received += other.received
        self.forwarded += other.forwarded
        self.deleted += other.deleted
        self.rejected += other.rejected
        self.resent += other.resent
        self.rejections.extend(other.rejections)


def _chunks(records: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    """Split into PutRecordBatch calls within Firehose's count and size limits."""
    chunks: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for item in records:
        if current and (
            len(current) == FIREHOSE_MAX_RECORDS or size + len(item[1]) > FIREHOSE_MAX_BATCH_BYTES
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item[1])
    if current:
        chunks.append(current)
    return chunks


def put_all(
    firehose,
    stream: str,
    records: list[tuple[str, bytes]],
    max_resends: int = 8,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Put every record; resend only the failed ones with backoff. Returns the number of resends."""
    resends = 0
    for chunk in _chunks(records):
        pending = chunk
        attempt = 0
        while pending:
            response = firehose.put_record_batch(
                DeliveryStreamName=stream, Records=[{"Data": data} for _, data in pending]
            )
            if response.get("FailedPutCount", 0) == 0:
                break
            failed = [
                item
                for item, result in zip(pending, response["RequestResponses"], strict=True)
                if result.get("ErrorCode")
            ]
            attempt += 1
            if attempt > max_resends:
                raise PartialFailureError(
                    f"{len(failed)} record(s) still refused by Firehose after {max_resends} resends: "
                    f"{response['RequestResponses'][0].get('ErrorCode')}"
                )
            resends += len(failed)
            log.warning("Firehose refused %d of %d records; resending them", len(failed), len(pending))
            sleep(min(10.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))
            pending = failed
    return resends


def forward_messages(
    firehose, sqs, queue_url: str, stream: str, messages: list[dict], limits: PayloadLimits = DEFAULT_LIMITS
) -> ForwardStats:
    """Forward one group of received messages, then delete those Firehose accepted."""
    stats = ForwardStats(received=len(messages))
    accepted: list[tuple[str, bytes]] = []
    for message in messages:
        record = to_landing_record(message, limits)
        if isinstance(record, Rejection):
            stats.rejected += 1
            stats.rejections.append(record)
            continue
        data = landing_line(record)
        if len(data) > FIREHOSE_MAX_RECORD_BYTES:
            reason = f"record of {len(data)} bytes exceeds Firehose's {FIREHOSE_MAX_RECORD_BYTES} byte limit"
            rejection = Rejection(record["message_id"], record["receive_count"], reason)
            stats.rejected += 1
            stats.rejections.append(rejection)
            log.warning(
                "rejected message %s (receive %d): %s", rejection.message_id, rejection.receive_count, reason
            )
            continue
        accepted.append((message["ReceiptHandle"], data))
    if not accepted:
        return stats
    stats.resent = put_all(firehose, stream, accepted)
    stats.forwarded = len(accepted)
    fault_point("ingest.after_put_before_delete")
    stats.deleted, failed = sqs_calls.delete(sqs, queue_url, [handle for handle, _ in accepted])
    for failure in failed:
        # The record is in Firehose already; the message will be redelivered and land twice.
        # Curated deduplicates by idempotency_key, so this costs a duplicate row in raw only.
        log.warning("could not delete a forwarded message: %s", failure)
    return stats


def drain(
    sqs,
    firehose,
    queue_url: str,
    stream: str,
    group_size: int = 100,
    max_seconds: float = 300.0,
    visibility_timeout_s: int = 30,
    max_messages: int | None = None,
    wait_s: int = 0,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> ForwardStats:
    """Receive until the queue answers empty (or ``max_messages`` were received), forwarding in
    groups of up to ``group_size`` messages.

    A group is flushed well within the visibility timeout so that no message reappears while its
    record is being put.
    """
    total = ForwardStats()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and (max_messages is None or total.received < max_messages):
        group: list[dict] = []
        started = time.monotonic()
        empty = False
        while len(group) < group_size and time.monotonic() - started < visibility_timeout_s / 3:
            messages = sqs_calls.receive(sqs, queue_url, wait_s=wait_s)
            if not messages:
                empty = True
                break
            group.extend(messages)
        if group:
            total.add(forward_messages(firehose, sqs, queue_url, stream, group, limits))
        if empty:
            break
    return total
