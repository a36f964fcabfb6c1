"""The operator audit log: who did what, when and why, appended to a DynamoDB table."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from wap_pipeline import aws


@dataclass(frozen=True)
class AuditEntry:
    entry_id: str
    at: str
    operator: str
    action: str
    target: str
    reason: str
    details: dict

    def as_dict(self) -> dict:
        return {
            "entry_id": self.entry_id,
            "at": self.at,
            "operator": self.operator,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "details": self.details,
        }


class AuditLog:
    def __init__(self, dynamodb, table: str):
        self._dynamodb = dynamodb
        self._table = table

    def record(
        self, operator: str, action: str, target: str, reason: str, details: dict | None = None
    ) -> AuditEntry:
        entry = AuditEntry(
            entry_id=str(uuid.uuid4()),
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            operator=operator,
            action=action,
            target=target,
            reason=reason,
            details=details or {},
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

    def entries(self) -> list[AuditEntry]:
        """Every entry, oldest first."""
        entries = []
        for page in self._dynamodb.get_paginator("scan").paginate(TableName=self._table):
            for item in page.get("Items", []):
                values = aws.from_item(item)
                values["details"] = json.loads(values["details"])
                entries.append(AuditEntry(**{name: values[name] for name in AuditEntry.__dataclass_fields__}))
        return sorted(entries, key=lambda e: (e.at, e.entry_id))
