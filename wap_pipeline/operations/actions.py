"""Operator actions; each one does its work and appends an audit-log entry."""

from __future__ import annotations

from wap_pipeline import aws
from wap_pipeline.ingest import dlq
from wap_pipeline.operations.audit_log import AuditLog
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import BreakerState, CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine, QuarantineEntry
from wap_pipeline.settings import Settings


class Operator:
    """Actions an operator takes, recorded under ``name``."""

    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name
        dynamodb = aws.client("dynamodb", settings)
        self.audit = AuditLog(dynamodb, settings.audit_table)
        self.quarantine = Quarantine(dynamodb, settings.quarantine_table)
        self.breaker = CircuitBreaker(dynamodb, settings.breaker_table, settings.pipeline_name)

    def quarantine_add(self, record_id: str, reason: str) -> QuarantineEntry:
        entry = self.quarantine.add(record_id, reason, self.name)
        self.audit.record(self.name, "quarantine.add", record_id, reason)
        return entry

    def quarantine_remove(self, record_id: str, reason: str) -> bool:
        removed = self.quarantine.remove(record_id)
        self.audit.record(self.name, "quarantine.remove", record_id, reason, {"was_present": removed})
        return removed

    def dlq_purge(self, reason: str, message_ids: set[str] | None = None) -> list[dlq.DlqMessage]:
        sqs = aws.client("sqs", self.settings)
        purged = dlq.purge(sqs, queue_url(sqs, self.settings.dlq_name), message_ids)
        self.audit.record(
            self.name,
            "dlq.purge",
            self.settings.dlq_name,
            reason,
            {
                "message_ids": [m.message_id for m in purged],
                "original_message_ids": [m.original_message_id for m in purged],
            },
        )
        return purged

    def dlq_redrive(
        self, reason: str, message_ids: set[str] | None = None
    ) -> list[tuple[dlq.DlqMessage, str]]:
        sqs = aws.client("sqs", self.settings)
        moved = dlq.redrive(
            sqs, queue_url(sqs, self.settings.dlq_name), queue_url(sqs, self.settings.queue_name), message_ids
        )
        self.audit.record(
            self.name,
            "dlq.redrive",
            self.settings.queue_name,
            reason,
            {
                "moved": [
                    {"original_message_id": m.original_message_id, "new_message_id": new} for m, new in moved
                ]
            },
        )
        return moved

    def reset_breaker(self, reason: str) -> BreakerState:
        before = self.breaker.state()
        after = self.breaker.reset(reason, self.name)
        self.audit.record(
            self.name,
            "breaker.reset",
            self.settings.pipeline_name,
            reason,
            {"was": before.status, "tripped_by": before.tripped_by, "tripped_reason": before.reason[:500]},
        )
        return after
