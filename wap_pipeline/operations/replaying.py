"""``data-patcher replay``: re-inject hand-fixed copies of quarantined records as replays.

``secure-clean`` fixes what removing characters fixes. A record wrong in another way (an amount wrong at
source, a missing key) is fixed by hand and handed to ``replay`` -- one fixed record (the message body)
per line. Only data-patcher's replays pass the quarantine (:mod:`wap_pipeline.rules.replays`), so this
is how such a fix reaches curated; a producer's own ``is_replay`` no longer does.

Each record is judged as the pipeline will judge its replay (the forwarder, the standardized audit)
and must replace a record that is in the quarantine (its quarantine id is): a replay exists to pass the
quarantine and supersede the original, anything else is a new event and goes through the producer.
Records that fail are listed with why and not sent; the rest are sent through
:meth:`~wap_pipeline.operations.actions.Operator.inject_replays` (granted, recorded in the audit log).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wap_pipeline.operations.patching import check_queue, new_patch_id, standardized_fields
from wap_pipeline.rules.cleaning import CLEANED, INVALID, CleanedLine, RecordIds
from wap_pipeline.rules.dlq_fixes import replay_problems
from wap_pipeline.rules.envelope import DEFAULT_LIMITS, PayloadLimits, json_object
from wap_pipeline.rules.replays import replay_quarantine_id
from wap_pipeline.state import record_sent


def judge_fixed_record(
    number: int,
    line: bytes,
    quarantined: Collection[str],
    fields: dict[str, object],
    now: datetime,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> CleanedLine:
    """Line ``number`` of the file as the replay to send (``cleaned``), or ``invalid`` with why."""
    try:
        body = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return CleanedLine(
            number, INVALID, RecordIds(), reasons=[f"not valid UTF-8 at byte {error.start + 1}"]
        )
    payload = json_object(body)
    if payload is None:
        return CleanedLine(number, INVALID, RecordIds(), reasons=["not a JSON object"])
    key, event_id = payload.get("idempotency_key"), payload.get("event_id")
    ids = RecordIds(
        idempotency_key=key if isinstance(key, str) else None,
        event_id=event_id if isinstance(event_id, str) else None,
    )
    attributes = {"is_replay": "true"} | (
        {"idempotency_key": ids.idempotency_key} if ids.idempotency_key else {}
    )
    quarantine_id = replay_quarantine_id(body, attributes)
    if quarantine_id not in quarantined:
        reason = (
            f"{quarantine_id} is not quarantined: a replay replaces a quarantined record "
            "(`data-patcher quarantine add` it first; a new event goes through the producer)"
            if quarantine_id
            else "no usable event_id: a replay must name the quarantined record it replaces"
        )
        return CleanedLine(number, INVALID, ids, reasons=[reason], original_quarantine_id=quarantine_id)
    problems = replay_problems(body, attributes, fields, now, limits)
    status = INVALID if problems else CLEANED
    return CleanedLine(
        number,
        status,
        ids,
        body=body,
        attributes=attributes,
        reasons=problems,
        original_quarantine_id=quarantine_id,
    )


@dataclass
class ReplayOutcome:
    patch_id: str
    records: list[CleanedLine] = field(default_factory=list)
    new_message_ids: list[str] = field(default_factory=list)

    @property
    def sendable(self) -> list[CleanedLine]:
        return [r for r in self.records if r.status == CLEANED]

    @property
    def refused(self) -> list[CleanedLine]:
        return [r for r in self.records if r.status != CLEANED]

    def as_dict(self) -> dict:
        new_ids = dict(zip((r.line for r in self.sendable), self.new_message_ids, strict=False))
        return {
            "patch_id": self.patch_id,
            "injected": len(self.new_message_ids),
            "refused": len(self.refused),
            "records": [{**r.as_dict(), "new_message_id": new_ids.get(r.line)} for r in self.records],
        }


def replay_fixed_records(operator, lines: list[bytes], reason: str, dry_run: bool) -> ReplayOutcome:
    """Judge every non-blank line of a file of fixed records; send the good ones to the ingest queue
    as data-patcher replays (none when ``dry_run``). ``operator``: an Operator (every send recorded)."""
    settings = operator.settings
    check_queue(settings, settings.queue_name)
    fields, _ = standardized_fields(settings)
    now = datetime.now(UTC)
    quarantined = operator.quarantine.ids()
    outcome = ReplayOutcome(new_patch_id(now))
    outcome.records = [
        judge_fixed_record(number, line, quarantined, fields, now, settings.payload_limits)
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if dry_run or not outcome.sendable:
        return outcome
    outcome.new_message_ids = operator.inject_replays(
        settings.queue_name, outcome.sendable, reason, outcome.patch_id
    )
    record_sent(settings, len(outcome.new_message_ids), kind="replay")
    return outcome
