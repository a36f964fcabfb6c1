"""The forwarder's breaker: while Firehose is down, stop receiving instead of spending receives.

Every receive of an SQS message counts towards the redrive policy's ``maxReceiveCount``; a forwarder
that keeps receiving while Firehose refuses every put sends good messages to the DLQ beside the real
poison (FMEA 1.3 turned into 1.1). So when a put fails for good (after botocore's retries and our
resends), the forwarder gives its messages back and OPENs this breaker; while it is OPEN nothing is
received. Once ``next_probe_at`` has passed, the next drain probes Firehose with a call that sends no
record (DescribeDeliveryStream): success CLOSEs the breaker and receiving resumes; failure keeps it
OPEN and doubles the wait (up to ``MAX_PROBE_DELAY_S``). Only messages rejected for their own content
ever spend their receives.

One DynamoDB item in the breaker table (``<pipeline>#forwarder``), written conditionally on its
version. Unlike the pipeline's breaker it closes by itself: an outage needs no operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from wap_pipeline import aws
from wap_pipeline.settings import Settings

log = logging.getLogger(__name__)

CLOSED = "CLOSED"
OPEN = "OPEN"
FIRST_PROBE_DELAY_S = 5.0
MAX_PROBE_DELAY_S = 60.0


@dataclass(frozen=True)
class ForwarderState:
    key: str
    status: str = CLOSED
    reason: str = ""
    opened_at: str = ""
    closed_at: str = ""
    failed_probes: int = 0
    next_probe_at: float = 0.0  # epoch seconds
    version: int = 0

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    def probe_delay_s(self) -> float:
        """The wait before the next probe: doubles with each failed one, capped."""
        return min(MAX_PROBE_DELAY_S, FIRST_PROBE_DELAY_S * 2**self.failed_probes)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ForwarderBreaker:
    def __init__(self, dynamodb, table: str, pipeline: str, clock: Callable[[], float] = time.time):
        self._dynamodb, self._table, self._clock = dynamodb, table, clock
        self.key = f"{pipeline}#forwarder"

    def state(self) -> ForwarderState:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=aws.to_item({"pipeline": self.key}), ConsistentRead=True
        ).get("Item")
        if not item:
            return ForwarderState(self.key)
        values = aws.from_item(item)
        values["key"] = values.pop("pipeline")
        values["next_probe_at"] = float(values.get("next_probe_at", 0))
        return ForwarderState(**{k: v for k, v in values.items() if k in ForwarderState.__dataclass_fields__})

    def _write(self, previous: ForwarderState, new: ForwarderState) -> bool:
        """Write ``new`` if nobody changed the item since ``previous``; False if somebody did."""
        item = {**asdict(new), "pipeline": new.key, "next_probe_at": str(new.next_probe_at)}
        del item["key"]
        return aws.put_if_version(self._dynamodb, self._table, item, "pipeline", previous.version)

    def open(self, reason: str) -> ForwarderState:
        """Firehose failed for good: stop receiving until a probe succeeds."""
        current = self.state()
        failed = current.failed_probes + 1 if current.is_open else 0
        new = ForwarderState(
            self.key,
            OPEN,
            current.reason if current.is_open else reason[:1000],  # what opened it; probes only log
            current.opened_at if current.is_open else _now_iso(),
            current.closed_at,
            failed,
            0.0,
            current.version + 1,
        )
        new = ForwarderState(**{**asdict(new), "next_probe_at": self._clock() + new.probe_delay_s()})
        self._write(current, new)
        return new

    def allows_receive(self, probe: Callable[[], object]) -> bool:
        """CLOSED: yes. OPEN: no until the probe time; then ``probe()`` decides (and is recorded)."""
        current = self.state()
        if not current.is_open:
            return True
        if self._clock() < current.next_probe_at:
            return False
        try:
            probe()
        except Exception as error:  # noqa: BLE001 - any failure of the probe keeps the breaker open
            log.info("forwarder probe failed, Firehose still unavailable: %s", error)
            self.open(f"probe failed: {error}")
            return False
        closed = ForwarderState(
            self.key,
            CLOSED,
            current.reason,
            current.opened_at,
            _now_iso(),
            0,
            0.0,
            current.version + 1,
        )
        self._write(current, closed)
        return True


def forwarder_breaker(dynamodb, settings: Settings) -> ForwarderBreaker:
    return ForwarderBreaker(dynamodb, settings.breaker_table, settings.pipeline_name)
