"""SQS message -> landing record, and landing file -> raw rows.

A landing record is one JSON object per line. It carries the message body verbatim (``body``) plus
the SQS metadata later stages need to dedupe and trace. Firehose concatenates records without a
separator, so the forwarder appends the newline itself (as on real Firehose).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

ENVELOPE_FIELDS = (
    "message_id",
    "original_message_id",
    "idempotency_key",
    "is_replay",
    "sent_timestamp",
    "receive_count",
    "body",
)


@dataclass(frozen=True)
class PayloadLimits:
    """What the forwarder accepts. Anything larger or deeper is malformed (it goes to the DLQ)."""

    max_bytes: int = 128 * 1024
    max_depth: int = 32


DEFAULT_LIMITS = PayloadLimits()


@dataclass(frozen=True)
class Rejection:
    """A message that must not be forwarded; it returns to the queue and ends in the DLQ."""

    message_id: str
    receive_count: int
    reason: str


def _attribute(message: dict, name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    if value is None:
        return None
    return value.get("StringValue")


def _depth_exceeds(value: object, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_body(body: str, limits: PayloadLimits = DEFAULT_LIMITS) -> dict | str:
    """The body as a JSON object, or a precise reason why it is not one."""
    size = len(body.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_bytes:
        return f"payload of {size} bytes exceeds the {limits.max_bytes} byte limit"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return f"invalid JSON: {error}"
    if not isinstance(value, dict):
        return f"JSON {type(value).__name__} where an object was expected"
    if _depth_exceeds(value, limits.max_depth):
        return f"JSON nested deeper than {limits.max_depth} levels"
    return value


def to_landing_record(message: dict, limits: PayloadLimits = DEFAULT_LIMITS) -> dict | Rejection:
    """Build the landing record for one received SQS message, or reject it."""
    attributes = message.get("Attributes", {})
    message_id = message["MessageId"]
    receive_count = int(attributes.get("ApproximateReceiveCount", "1"))
    body = message.get("Body", "")
    payload = parse_body(body, limits)
    if isinstance(payload, str):
        return Rejection(message_id=message_id, receive_count=receive_count, reason=payload)
    is_replay = _attribute(message, "is_replay") == "true" or payload.get("is_replay") is True
    idempotency_key = _attribute(message, "idempotency_key")
    if idempotency_key is None and isinstance(payload.get("idempotency_key"), str):
        idempotency_key = payload["idempotency_key"]
    sent = attributes.get("SentTimestamp")
    return {
        "message_id": message_id,
        "original_message_id": _attribute(message, "original_message_id") or message_id,
        "idempotency_key": idempotency_key,
        "is_replay": is_replay,
        "sent_timestamp": int(sent) if sent else None,
        "receive_count": receive_count,
        "body": body,
    }


def landing_line(record: dict) -> bytes:
    return orjson.dumps(record) + b"\n"


def raw_rows(data: bytes, landing_file_key: str, batch_id: str, ingested_at: datetime) -> list[dict]:
    """Every line of a landing file as a raw row, as it came.

    A line that is not a landing envelope is kept too (``body`` holds the line as text), so that the
    standardized audit flags it instead of it vanishing here.
    """
    rows = []
    for line_number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        row = {
            "batch_id": batch_id,
            "landing_file_key": landing_file_key,
            "line_number": line_number,
            "ingested_at": ingested_at,
            "message_id": None,
            "original_message_id": None,
            "idempotency_key": None,
            "is_replay": False,
            "sent_timestamp": None,
            "receive_count": None,
            "body": line.decode("utf-8", errors="replace"),
        }
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("body"), str):
            row.update({name: record.get(name) for name in ENVELOPE_FIELDS})
            row["is_replay"] = bool(record.get("is_replay"))
            if row["sent_timestamp"] is not None:
                row["sent_timestamp"] = datetime.fromtimestamp(row["sent_timestamp"] / 1000, tz=UTC)
        rows.append(row)
    return rows
