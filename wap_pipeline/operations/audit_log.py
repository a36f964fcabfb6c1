"""The operator audit log: who did what, when and why, appended to a DynamoDB table.

An action is recorded twice: its *intent* before anything is changed, its *outcome* (``done`` or
``failed``, pointing at the intent) after -- so a crash or a failed write in between still leaves
the intent: no purge or reset happens unrecorded. Entries are never overwritten (conditional put).
:meth:`AuditLog.entries` shows one entry per action: its outcome, or the bare intent of an action
whose outcome was never recorded (phase ``intent``: it started and nobody knows how it ended).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from wap_pipeline import aws

INTENT, DONE, FAILED = "intent", "done", "failed"


@dataclass(frozen=True)
class AuditEntry:
    entry_id: str
    at: str
    operator: str
    action: str
    target: str
    reason: str
    details: dict
    phase: str = DONE
    """``intent`` (recorded before acting), ``done`` or ``failed`` (after)."""
    intent_id: str = ""
    """For an outcome: the entry id of its intent."""

    def as_dict(self) -> dict:
        return {
            "entry_id": self.entry_id,
            "at": self.at,
            "operator": self.operator,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "details": self.details,
            "phase": self.phase,
            "intent_id": self.intent_id,
        }


class AuditLog:
    def __init__(self, dynamodb, table: str):
        self._dynamodb = dynamodb
        self._table = table

    def record(
        self,
        operator: str,
        action: str,
        target: str,
        reason: str,
        details: dict | None = None,
        phase: str = DONE,
        intent_id: str = "",
    ) -> AuditEntry:
        entry = AuditEntry(
            entry_id=str(uuid.uuid4()),
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            operator=operator,
            action=action,
            target=target,
            reason=reason,
            details=details or {},
            phase=phase,
            intent_id=intent_id,
        )
        self._dynamodb.put_item(
            TableName=self._table,
            # details is stored as JSON text: any shape, and the items already written stay readable.
            Item=aws.to_item(
                {**entry.as_dict(), "details": json.dumps(entry.details, sort_keys=True, default=str)}
            ),
            ConditionExpression="attribute_not_exists(entry_id)",
        )
        return entry

    def entries(self, every_phase: bool = False) -> list[AuditEntry]:
        """One entry per action, oldest first (its outcome, or its intent when no outcome was
        recorded); ``every_phase``: every stored entry, intents and outcomes."""
        entries = []
        for page in self._dynamodb.get_paginator("scan").paginate(TableName=self._table):
            for item in page.get("Items", []):
                values = aws.from_item(item)
                values["details"] = json.loads(values["details"])
                fields = AuditEntry.__dataclass_fields__
                entries.append(AuditEntry(**{name: values[name] for name in fields if name in values}))
        entries.sort(key=lambda e: (e.at, e.entry_id))
        if every_phase:
            return entries
        concluded = {e.intent_id for e in entries if e.intent_id}
        return [e for e in entries if not (e.phase == INTENT and e.entry_id in concluded)]
