"""Dead-letter queue tooling: browse (without consuming), take and release, purge, and redrive.

Redrive is receive-and-resend (the local server has no ``StartMessageMoveTask``, and this works on
both): the copy sent back to the source queue carries ``original_message_id``, since SQS gives it a
new message id. A DLQ message is deleted only after its copy was accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from wap_pipeline.ingest import sqs as sqs_calls


@dataclass(frozen=True)
class DlqMessage:
    message_id: str
    original_message_id: str
    body: str
    receive_count: int
    sent_at: datetime | None
    attributes: dict[str, str]
    receipt_handle: str

    def as_dict(self) -> dict:
        return {
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "receive_count": self.receive_count,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "attributes": self.attributes,
            "body": self.body,
        }


def from_event_record(record: dict) -> DlqMessage:
    """A record of a Lambda SQS event (the event source mapping's camelCase shape) as a DlqMessage."""
    return _parse(
        {
            "MessageId": record["messageId"],
            "ReceiptHandle": record["receiptHandle"],
            "Body": record.get("body", ""),
            "Attributes": record.get("attributes", {}),
            "MessageAttributes": {
                name: {"StringValue": value.get("stringValue", "")}
                for name, value in record.get("messageAttributes", {}).items()
            },
        }
    )


def _parse(message: dict) -> DlqMessage:
    attributes = {k: v.get("StringValue", "") for k, v in message.get("MessageAttributes", {}).items()}
    system = message.get("Attributes", {})
    sent = system.get("SentTimestamp")
    return DlqMessage(
        message_id=message["MessageId"],
        original_message_id=attributes.get("original_message_id") or message["MessageId"],
        body=message.get("Body", ""),
        receive_count=int(system.get("ApproximateReceiveCount", "0")),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, tz=UTC) if sent else None,
        attributes=attributes,
        receipt_handle=message["ReceiptHandle"],
    )


def _receive_all(sqs, url: str, limit: int | None, hide_for_s: int) -> list[DlqMessage]:
    messages: dict[str, DlqMessage] = {}
    while limit is None or len(messages) < limit:
        batch = sqs_calls.receive(sqs, url, visibility_timeout_s=hide_for_s)
        if not batch:
            break
        for message in batch:
            parsed = _parse(message)
            messages[parsed.message_id] = parsed
    return list(messages.values())


def release(sqs, url: str, messages: list[DlqMessage]) -> None:
    """Make taken messages visible again at once: they stay in the DLQ."""
    _make_visible(sqs, url, messages)


def _make_visible(sqs, url: str, messages: list[DlqMessage]) -> None:
    for start in range(0, len(messages), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
            for i, m in enumerate(messages[start : start + 10])
        ]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)


def browse(sqs, url: str, limit: int | None = None) -> list[DlqMessage]:
    """Read messages and put them straight back (visible again); nothing is consumed."""
    messages = _receive_all(sqs, url, limit, hide_for_s=60)
    _make_visible(sqs, url, messages)
    return sorted(messages, key=lambda m: (m.sent_at or datetime.min.replace(tzinfo=UTC), m.message_id))


def oldest_age_s(messages: list[DlqMessage], now: float | None = None) -> float | None:
    sent = [m.sent_at.timestamp() for m in messages if m.sent_at]
    return (now or time.time()) - min(sent) if sent else None


def _delete(sqs, url: str, messages: list[DlqMessage]) -> int:
    deleted, _ = sqs_calls.delete(sqs, url, [m.receipt_handle for m in messages])
    return deleted


def take(sqs, url: str, message_ids: set[str] | None = None, hide_for_s: int = 120) -> list[DlqMessage]:
    """Receive every message (or only ``message_ids``), hidden for ``hide_for_s`` so that nobody else
    acts on them meanwhile; the others are made visible again at once."""
    messages = _receive_all(sqs, url, None, hide_for_s=hide_for_s)
    chosen = [m for m in messages if message_ids is None or m.message_id in message_ids]
    _make_visible(sqs, url, [m for m in messages if m not in chosen])
    return chosen


def delete(sqs, url: str, messages: list[DlqMessage]) -> set[str]:
    """Delete taken messages (by their receipt handles); returns the ids SQS did not delete."""
    not_deleted: set[str] = set()
    for start in range(0, len(messages), 10):
        group = messages[start : start + 10]
        _, failed = sqs_calls.delete(sqs, url, [m.receipt_handle for m in group])
        not_deleted |= {group[int(f["Id"])].message_id for f in failed}
    return not_deleted


def purge(sqs, url: str, message_ids: set[str] | None = None) -> list[DlqMessage]:
    """Delete every message (or only ``message_ids``); returns what was deleted."""
    chosen = take(sqs, url, message_ids)
    _delete(sqs, url, chosen)
    return chosen


def redrive(
    sqs, dlq_url: str, source_url: str, message_ids: set[str] | None = None
) -> list[tuple[DlqMessage, str]]:
    """Send each message (or only ``message_ids``) back to the source queue, keeping its original id.

    Returns (DLQ message, new message id) pairs. A DLQ message is deleted only after its copy was sent.
    """
    chosen = take(sqs, dlq_url, message_ids)
    moved = []
    for message in chosen:
        attributes = {**message.attributes, "original_message_id": message.original_message_id}
        response = sqs.send_message(
            QueueUrl=source_url,
            MessageBody=message.body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
        _delete(sqs, dlq_url, [message])
        moved.append((message, response["MessageId"]))
    return moved
