"""Forward SQS messages to Firehose without losing or silently dropping any.

* Every body is parsed. A body that is not a JSON object (or is too large or too deeply nested) is
  never forwarded and never deleted: it returns to the queue after the visibility timeout, and after
  the redrive policy's max receives SQS itself moves it to the DLQ. Each rejection is returned in
  the stats (message id, receive count, reason) for the caller to log once.
* A message is deleted only after Firehose accepted its record. ``PutRecordBatch`` partial failures
  (``FailedPutCount`` > 0) are resent -- only the failed records -- with exponential backoff.
* Before deleting, the forwarder writes its receipt of the group (:mod:`.receipts`): the message ids
  Firehose accepted and the rejections. The message reconciliation holds landed rows against it.
* When Firehose fails for good (an outage outlasting botocore's retries and our resends), or the
  receipt cannot be written, the group's messages are given back and the forwarder's breaker opens
  (:mod:`.forwarder_breaker`): nothing more is received until a probe finds Firehose and the receipt
  log back, so an outage never spends the messages' receives.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from wap_pipeline.hooks import fault_point
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.ingest.forwarder_breaker import ForwarderBreaker
from wap_pipeline.ingest.receipts import ForwardReceipt, ReceiptLog
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


class DownstreamUnavailableError(RuntimeError):
    """Firehose refused a group's puts for good, or its receipt could not be written: the messages are
    not at fault and must not be deleted."""

    def __init__(self, message: str, receipt_handles: list[str], stats: ForwardStats):
        super().__init__(message)
        self.receipt_handles = receipt_handles
        self.stats = stats


@dataclass
class ForwardStats:
    received: int = 0
    forwarded: int = 0
    deleted: int = 0
    rejected: int = 0
    resent: int = 0
    released: int = 0  # given back to the queue because Firehose was down
    paused: str = ""  # why the forwarder stopped receiving (its breaker is open), if it did
    rejections: list[Rejection] = field(default_factory=list)

    def add(self, other: ForwardStats) -> None:
        self.received += other.received
        self.forwarded += other.forwarded
        self.deleted += other.deleted
        self.rejected += other.rejected
        self.resent += other.resent
        self.released += other.released
        self.paused = other.paused or self.paused
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
    firehose,
    sqs,
    queue_url: str,
    stream: str,
    messages: list[dict],
    receipts: ReceiptLog | None,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> ForwardStats:
    """Forward one group of received messages, record them in ``receipts`` (None: unrecorded, for
    benchmarks), then delete those Firehose accepted."""
    stats = ForwardStats(received=len(messages))
    accepted: list[tuple[str, bytes]] = []
    originals: dict[str, str] = {}
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
        originals[record["message_id"]] = record["original_message_id"]
    if accepted:
        try:
            stats.resent = put_all(firehose, stream, accepted)
        except (BotoCoreError, ClientError, PartialFailureError) as error:
            handles = [handle for handle, _ in accepted]
            raise DownstreamUnavailableError(f"Firehose unavailable: {error}", handles, stats) from error
    if receipts is not None and (accepted or stats.rejections):
        try:
            receipts.write(ForwardReceipt(datetime.now(UTC), originals, tuple(stats.rejections)))
        except (BotoCoreError, ClientError) as error:
            # Not deleted, the messages come back and are forwarded (and landed) again: curated keeps
            # one copy. Deleting them unrecorded would make the reconciliation report them as unknown.
            handles = [handle for handle, _ in accepted]
            raise DownstreamUnavailableError(f"receipt log unavailable: {error}", handles, stats) from error
    if not accepted:
        return stats
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
    breaker: ForwarderBreaker | None = None,
    receipts: ReceiptLog | None = None,
) -> ForwardStats:
    """Receive until the queue answers empty (or ``max_messages`` were received), forwarding in
    groups of up to ``group_size`` messages.

    A group is flushed well within the visibility timeout so that no message reappears while its
    record is being put. With ``breaker``: nothing is received while it is open (the stats say
    ``paused``), and a group Firehose refuses for good (or whose receipt cannot be written) is given
    back and opens it; without one, that failure is raised. ``receipts``: where each group's receipt
    goes (None only where nothing reconciles, as in benchmarks).
    """
    total = ForwardStats()

    def probe() -> None:
        firehose.describe_delivery_stream(DeliveryStreamName=stream)
        if receipts is not None:
            receipts.s3.head_bucket(Bucket=receipts.bucket)

    if breaker is not None and not breaker.allows_receive(probe):
        total.paused = breaker.state().reason or "forwarder breaker open"
        return total
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
            try:
                total.add(forward_messages(firehose, sqs, queue_url, stream, group, receipts, limits))
            except DownstreamUnavailableError as error:
                if breaker is None:
                    raise error.__cause__ from None
                total.add(error.stats)
                state = breaker.open(str(error))
                total.released += sqs_calls.release(
                    sqs, queue_url, error.receipt_handles, int(state.probe_delay_s())
                )
                total.paused = state.reason
                log.warning(
                    "%s: %d message(s) given back; receiving stops", error, len(error.receipt_handles)
                )
                break
        if empty:
            break
    return total
