"""SQS message -> landing record, and landing file -> raw rows.

A landing record is one JSON object per line. It carries the message body verbatim (``body``) plus
the SQS metadata later stages need to dedupe and trace. Firehose concatenates records without a
separator, so the forwarder appends the newline itself (as on real Firehose).

:func:`raw_rows` is the definition of a landing file's raw rows, line by line. :func:`raw_table`
gives the same rows as an Arrow table, parsed by Arrow's JSON reader when every line of the file is
a well-formed envelope (what the forwarder writes), and through :func:`raw_rows` otherwise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

ENVELOPE_FIELDS = (
    "message_id",
    "original_message_id",
    "idempotency_key",
    "is_replay",
    "sent_timestamp",
    "receive_count",
    "body",
    "replay_token",
)
# The message attribute (and landing field, and raw column) carrying data-patcher's replay grant token
# (wap_pipeline.rules.replays): only data-patcher's replays are replays.
REPLAY_TOKEN = "replay_token"


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


def json_object(text: str | bytes | None) -> dict | None:
    """``text`` as a JSON object; None when it is not one (not JSON, another JSON value, no text).
    How every layer reads a landing line and a message body: one definition of "is an object"."""
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def split_landing_line(line: bytes | str) -> tuple[dict | None, str]:
    """(envelope, body) of one landing line. The envelope is the line as a JSON object with a string
    ``body``; a line that is not one has no envelope and is its own body (bytes decoded, invalid UTF-8
    replaced), so that the standardized audit flags it instead of it vanishing."""
    envelope = json_object(line)
    if envelope is not None and isinstance(envelope.get("body"), str):
        return envelope, envelope["body"]
    return None, line if isinstance(line, str) else line.decode("utf-8", errors="replace")


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
    record = {
        "message_id": message_id,
        "original_message_id": _attribute(message, "original_message_id") or message_id,
        "idempotency_key": idempotency_key,
        "is_replay": is_replay,
        "sent_timestamp": int(sent) if sent else None,
        "receive_count": receive_count,
        "body": body,
    }
    token = _attribute(message, REPLAY_TOKEN)
    if token:  # only on replays, so every other landing record stays as it was
        record[REPLAY_TOKEN] = token
    return record


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
        record, body = split_landing_line(line)
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
            "body": body,
            "replay_token": None,
        }
        if record is not None:
            row.update({name: record.get(name) for name in ENVELOPE_FIELDS})
            row["is_replay"] = bool(record.get("is_replay"))
            if not isinstance(row[REPLAY_TOKEN], str):
                row[REPLAY_TOKEN] = None
            if row["sent_timestamp"] is not None:
                row["sent_timestamp"] = datetime.fromtimestamp(row["sent_timestamp"] / 1000, tz=UTC)
        rows.append(row)
    return rows


# The envelope as Arrow's JSON reader must find it on every line for the vectorised path: anything
# else (a foreign line, a wrong type, a missing body, a blank line) sends the file to raw_rows.
_ENVELOPE_ARROW = pa.schema(
    [
        ("message_id", pa.string()),
        ("original_message_id", pa.string()),
        ("idempotency_key", pa.string()),
        ("is_replay", pa.bool_()),
        ("sent_timestamp", pa.int64()),
        ("receive_count", pa.int64()),
        ("body", pa.string()),
        ("replay_token", pa.string()),
    ]
)
_ENVELOPE_PARSE = pj.ParseOptions(explicit_schema=_ENVELOPE_ARROW, unexpected_field_behavior="ignore")


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _envelopes(data: bytes) -> pa.Table | None:
    """Every line parsed as an envelope, one row per line -- or None when any line is not one."""
    if not data:
        return None
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=_ENVELOPE_PARSE)
    except (pa.ArrowException, UnicodeDecodeError, ValueError):
        return None
    # The reader skips blank lines and accepts two objects on one line: line numbers would shift.
    if table.num_rows != _line_count(data) or table["body"].null_count:
        return None
    return table


def raw_table(
    data: bytes, landing_file_key: str, batch_id: str, ingested_at: datetime, schema: pa.Schema
) -> pa.Table:
    """The rows :func:`raw_rows` gives for a landing file, as an Arrow table of ``schema``."""
    envelopes = _envelopes(data)
    if envelopes is None:
        return pa.Table.from_pylist(raw_rows(data, landing_file_key, batch_id, ingested_at), schema=schema)
    count = envelopes.num_rows
    sent = pc.cast(envelopes["sent_timestamp"], pa.timestamp("ms", tz="UTC"))
    columns = {
        "batch_id": pa.repeat(pa.scalar(batch_id), count),
        "landing_file_key": pa.repeat(pa.scalar(landing_file_key), count),
        "line_number": pa.array(range(1, count + 1), pa.int64()),
        "ingested_at": pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), count),
        "message_id": envelopes["message_id"],
        "original_message_id": envelopes["original_message_id"],
        "idempotency_key": envelopes["idempotency_key"],
        "is_replay": pc.fill_null(envelopes["is_replay"], False),
        "sent_timestamp": sent,
        "receive_count": envelopes["receive_count"],
        "body": envelopes["body"],
        "replay_token": envelopes["replay_token"],
    }
    try:
        return pa.table([pc.cast(columns[f.name], f.type) for f in schema], schema=schema)
    except (pa.ArrowInvalid, KeyError):
        # e.g. a receive count beyond int32: let the row-by-row path report it as it always has.
        return pa.Table.from_pylist(raw_rows(data, landing_file_key, batch_id, ingested_at), schema=schema)
