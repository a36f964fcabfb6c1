"""Alerts: what an on-call person must hear about without watching the UI, published to SNS.

A plain function decides what is new since the last evaluation (the sensor's cursor): a breaker that
went RED (once per trip), a DLQ that grew, the forwarder pausing for a Firehose outage, a
reconciliation check that failed (once per failed evaluation). The
``alerts_sensor`` publishes each one to the alerts topic; on AWS subscribe email or chat to it
(docs/deploy.md), locally `provision` subscribes an SQS queue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from wap_pipeline.ingest.forwarder_breaker import ForwarderState
from wap_pipeline.resources.breaker import BreakerState


@dataclass(frozen=True)
class Alert:
    subject: str  # SNS allows 100 characters
    message: str


@dataclass(frozen=True)
class CheckFailure:
    """A failed evaluation of a reconciliation check (its id in the event log orders evaluations)."""

    check: str
    evaluation_id: int
    details: Mapping[str, object]


@dataclass(frozen=True)
class AlertCursor:
    """What was already announced: the breaker and forwarder versions, the DLQ depth last seen, the
    newest failed evaluation announced per check."""

    breaker_version: int = 0
    forwarder_version: int = 0
    dlq_depth: int = 0
    check_failures: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> AlertCursor:
        return cls(**json.loads(text)) if text else cls()


def alerts_due(
    cursor: AlertCursor,
    breaker: BreakerState,
    forwarder: ForwarderState,
    dlq_depth: int,
    check_failures: Sequence[CheckFailure] = (),
) -> tuple[list[Alert], AlertCursor]:
    """The alerts not announced yet, and the cursor that records them."""
    alerts = []
    if breaker.is_red and breaker.version != cursor.breaker_version:
        alerts.append(
            Alert(
                f"[wap] breaker {breaker.pipeline} RED"[:100],
                f"Circuit breaker {breaker.pipeline} tripped by {breaker.tripped_by} at {breaker.tripped_at} "
                f"(batch {breaker.batch_id or '-'}): {breaker.reason}\n\nLater batches are stopped. "
                "See docs/runbook.md; `data-patcher failures` names the records to quarantine.",
            )
        )
    if dlq_depth > cursor.dlq_depth:
        alerts.append(
            Alert(
                f"[wap] DLQ grew to {dlq_depth}",
                f"The dead-letter queue holds {dlq_depth} message(s) (was {cursor.dlq_depth}): messages rejected "
                "for their content. Review with `data-patcher dlq list` (docs/runbook.md 1.1).",
            )
        )
    if forwarder.is_open and forwarder.version != cursor.forwarder_version and forwarder.failed_probes == 0:
        alerts.append(
            Alert(
                "[wap] forwarder paused: Firehose unavailable",
                f"Since {forwarder.opened_at}: {forwarder.reason}\n\nMessages wait in the queue without "
                "spending their receives; the forwarder resumes by itself when Firehose answers.",
            )
        )
    announced = dict(cursor.check_failures)
    for failure in check_failures:
        if failure.evaluation_id <= announced.get(failure.check, 0):
            continue
        announced[failure.check] = failure.evaluation_id
        details = "\n".join(f"{key}: {value}" for key, value in failure.details.items())
        alerts.append(
            Alert(
                f"[wap] reconciliation failed: {failure.check}"[:100],
                f"The check {failure.check} failed: something landed, forwarded or published is unaccounted "
                f"for.\n\n{details}\n\nSee the check's metadata in the UI and docs/runbook.md.",
            )
        )
    return alerts, AlertCursor(
        breaker.version if breaker.is_red else cursor.breaker_version,
        forwarder.version if forwarder.is_open else cursor.forwarder_version,
        dlq_depth,
        announced,
    )
