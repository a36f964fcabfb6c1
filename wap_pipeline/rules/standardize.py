"""Raw rows -> typed standardized rows, and the schema check that runs before any write.

The producer fields a standardized table accepts are read from the table's schema (see
:func:`wap_pipeline.iceberg.schemas.payload_fields`). A field the table does not have, or a value of
the wrong JSON type for its column, is a *schema mismatch* (FMEA 2.1): the whole batch stops before
the branch write, with a message naming the fields. A value of the right type that breaks a
business rule (blank key, unparseable timestamp) is a *CDE violation*: the row is tagged by
:mod:`wap_pipeline.rules.audit`, not dropped.

The row-by-row parse below is the definition. A batch whose every body is a one-line JSON object
that fits the schema -- what producers send -- is parsed by Arrow's JSON reader instead, which
refuses exactly what the definition calls a mismatch; any batch it refuses, or that it cannot
represent line for line, goes through the definition. Both give identical tables (unit-tested).
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pyiceberg.types import BooleanType, DoubleType, IntegerType, LongType, StringType, TimestamptzType

from wap_pipeline.rules.envelope import json_object
from wap_pipeline.rules.quarantine import RECORD_ID_COLUMN, quarantine_ids, quarantine_mask
from wap_pipeline.rules.replays import ReplayGrant, granted_tokens, replay_claims, tokens_of, verified_replays

# JSON value types accepted for each Iceberg column type (None is always accepted).
_ACCEPTED_JSON_TYPES: dict[type, tuple[type, ...]] = {
    StringType: (str,),
    TimestamptzType: (str,),
    LongType: (int,),
    IntegerType: (int,),
    DoubleType: (int, float),
    BooleanType: (bool,),
}
# Payload keys that are envelope metadata, not event fields.
ENVELOPE_KEYS_IN_PAYLOAD = frozenset({"is_replay"})
PARSE_REASONS_COLUMN = "_parse_reasons"


class SchemaMismatchError(ValueError):
    """Records of the batch do not fit the standardized table's schema."""

    def __init__(self, problems: dict[str, str], examples: dict[str, list[str]]):
        self.problems = problems
        self.examples = examples
        detail = "; ".join(f"{name}: {problem}" for name, problem in sorted(problems.items()))
        super().__init__(f"schema mismatch in field(s) {', '.join(sorted(problems))} -- {detail}")

    @classmethod
    def combine(cls, errors: Iterable[SchemaMismatchError]) -> SchemaMismatchError:
        """The errors of consecutive chunks as the one error the whole batch gives (first problem
        per field, up to 5 example ids per field, in row order)."""
        collector = _MismatchCollector()
        for error in errors:
            for name, problem in error.problems.items():
                collector.problems.setdefault(name, problem)
            for name, ids in error.examples.items():
                room = 5 - len(collector.examples[name])
                collector.examples[name].extend(ids[: max(room, 0)])
        return cls(collector.problems, dict(collector.examples))


@dataclass
class _MismatchCollector:
    problems: dict[str, str] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, problem: str, record_id: str | None) -> None:
        self.problems.setdefault(name, problem)
        if record_id and len(self.examples[name]) < 5:
            self.examples[name].append(record_id)


def _json_type_name(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _accepts(iceberg_type: object, value: object) -> bool:
    if value is None:
        return True
    accepted = _ACCEPTED_JSON_TYPES.get(type(iceberg_type))
    if accepted is None:
        return False
    if isinstance(value, bool) and bool not in accepted:
        return False
    return isinstance(value, accepted)


def parse_timestamp(text: str) -> datetime | None:
    """An ISO-8601 timestamp that names its offset, in UTC; None when it is not one, or when it has
    no UTC equivalent (``0001-01-01T00:00+10:00`` is in year 0)."""
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if value.tzinfo is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


# Integers a column can hold; a JSON integer beyond them is a value out of the column's domain.
_INTEGER_RANGES: dict[type, tuple[int, int]] = {
    LongType: (-(2**63), 2**63 - 1),
    IntegerType: (-(2**31), 2**31 - 1),
}


def _out_of_range(iceberg_type: object, value: object) -> bool:
    """A JSON number too large for an integer column: an integer beyond it, or one beyond 64 bits
    that the parser could only read as a float. (A float within the range is a type mismatch.)"""
    bounds = _INTEGER_RANGES.get(type(iceberg_type))
    if bounds is None or isinstance(value, bool):
        return False
    if isinstance(value, float):  # -2**63 - 1 reads as the float -2.0**63: the bound itself is out
        return not bounds[0] < value < bounds[1]
    return isinstance(value, int) and not bounds[0] <= value <= bounds[1]


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKeyError(sorted({key for key in keys if keys.count(key) > 1}))
    return dict(pairs)


class _DuplicateKeyError(ValueError):
    def __init__(self, keys: list[str]):
        self.keys = keys


def repeated_object_keys(body: str) -> list[str]:
    """Keys that an object of ``body`` (at any depth) names twice. orjson keeps the last value while
    the payload keeps both, so such a record is flagged instead of being read one way silently.
    Only the row-by-row path asks: Arrow's reader refuses such bodies, which sends them there."""
    try:
        json.loads(body, object_pairs_hook=_reject_duplicates)
    except _DuplicateKeyError as error:
        return error.keys
    except (ValueError, RecursionError):
        return []  # not JSON (or nested beyond the parser): reported as such elsewhere
    return []


@dataclass(frozen=True)
class StandardizeResult:
    rows: pa.Table
    """Standardized columns (no invalid_flag / invalid_reasons yet) plus ``_parse_reasons``."""
    skipped: pa.Table
    """Lineage of the raw rows masked by the quarantine (record id, message id, file, line)."""
    unauthorized_replays: pa.Table
    """Lineage of the rows that claim to be replays without data-patcher's grant (masked or not)."""


Grants = Mapping[str, ReplayGrant]
"""data-patcher's replay grants by token: at least those of the tokens the raw rows carry."""


def _split_quarantined(
    raw: pa.Table, record_ids: pa.Array, is_replay: pa.Array, quarantined_ids: Collection[str]
) -> tuple[pa.Table, pa.Array, pa.Table]:
    """Apply the quarantine filter: (raw rows kept, the keep mask, lineage of the skipped rows).
    One definition for the row-by-row and the vectorised paths."""
    skip = quarantine_mask(pa.table({RECORD_ID_COLUMN: record_ids, "is_replay": is_replay}), quarantined_ids)
    keep = pc.invert(skip)
    return raw.filter(keep), keep, _lineage(raw, record_ids, skip)


def _lineage(raw: pa.Table, record_ids: pa.Array, rows: pa.Array) -> pa.Table:
    return (
        raw.filter(rows)
        .select(["message_id", "landing_file_key", "line_number"])
        .append_column(RECORD_ID_COLUMN, record_ids.filter(rows))
    )


def _replays(
    raw: pa.Table, record_ids: pa.Array, body_flags: pa.Array | pa.ChunkedArray, grants: Grants
) -> tuple[pa.Array, pa.Table]:
    """(which rows are replays data-patcher granted, lineage of the rows that only claim to be).
    A claim is the envelope's ``is_replay`` (attribute or body field, as the forwarder read it), the
    body's own ``is_replay``, or a token. One definition for both paths."""
    tokens = tokens_of(raw)
    verified = verified_replays(tokens, record_ids, raw["body"], grants)
    claimed = replay_claims(raw["is_replay"], body_flags, pc.is_valid(tokens))
    return verified, _lineage(raw, record_ids, pc.and_(claimed, pc.invert(verified)))


def _identities(raw: pa.Table, payloads: list[dict | None]) -> tuple[pa.Array, pa.Array]:
    """Each raw row's quarantine id and its body's own ``is_replay`` claim."""
    event_ids = [
        p.get("event_id") if p is not None and isinstance(p.get("event_id"), str) else None for p in payloads
    ]
    body_flags = [p is not None and p.get("is_replay") is True for p in payloads]
    return quarantine_ids(pa.array(event_ids, pa.string()), raw["original_message_id"]), pa.array(
        body_flags, pa.bool_()
    )


def record_quarantine_ids(raw: pa.Table) -> pa.Array:
    """Each raw row's quarantine id, as :func:`standardize` gives it (the id that masks the row)."""
    return _identities(raw, [json_object(body) for body in raw["body"].to_pylist()])[0]


def quarantine_split(
    raw: pa.Table, quarantined_ids: Collection[str], grants: Grants | None = None
) -> tuple[pa.Table, pa.Array]:
    """(raw rows the quarantine lets through, their quarantine ids) -- the filter :func:`standardize`
    applies, for callers that audit rows one by one (``data-patcher failures``)."""
    record_ids, body_flags = _identities(raw, [json_object(body) for body in raw["body"].to_pylist()])
    is_replay, _ = _replays(raw, record_ids, body_flags, grants or {})
    kept, keep, _ = _split_quarantined(raw, record_ids, is_replay, quarantined_ids)
    return kept, record_ids.filter(keep)


def standardize(
    raw: pa.Table,
    fields: dict[str, object],
    standardized_at: datetime,
    quarantined_ids: Collection[str] = (),
    grants: Grants | None = None,
) -> StandardizeResult:
    """Parse each raw body into the table's typed fields, carrying lineage.

    Rows whose record id is quarantined (and that are not replays data-patcher granted, see
    :mod:`wap_pipeline.rules.replays`) are set aside first, so that a quarantined record can never
    stop a batch, whatever is wrong with it. ``is_replay`` of a row is whether it is such a replay.
    Problems found while parsing go into a ``_parse_reasons`` list column, which the audit folds
    into ``invalid_reasons``. Raises :class:`SchemaMismatchError` when any remaining record does not
    fit the schema.
    """
    grants = grants or {}
    fast = _parse_vectorised(raw, fields)
    if fast is not None:
        try:
            return _standardize_vectorised(raw, fields, standardized_at, quarantined_ids, grants, fast)
        except pa.ArrowException:
            pass  # a value Arrow will not convert (an int beyond int32...): the definition decides
    payloads = [json_object(body) for body in raw["body"].to_pylist()]
    record_ids, body_flags = _identities(raw, payloads)
    is_replay, unauthorized = _replays(raw, record_ids, body_flags, grants)
    raw, keep, skipped = _split_quarantined(raw, record_ids, is_replay, quarantined_ids)
    kept = pc.indices_nonzero(keep).to_pylist()
    payloads = [payloads[i] for i in kept]
    is_replay = is_replay.filter(keep)
    kept_ids = record_ids.filter(keep).to_pylist()

    mismatches = _MismatchCollector()
    columns: dict[str, list] = {name: [] for name in fields}
    parse_reasons: list[list[str]] = []
    for payload, record_id, body in zip(payloads, kept_ids, raw["body"].to_pylist(), strict=True):
        reasons: list[str] = []
        if payload is None:
            reasons.append("payload is not a JSON object")
            payload = {}
        else:
            reasons.extend(f"duplicate key: {key[:40]!r}" for key in repeated_object_keys(body))
        for name, value in payload.items():
            if name in ENVELOPE_KEYS_IN_PAYLOAD:
                continue
            if name not in fields:
                mismatches.add(name, "field not in the standardized schema", record_id)
            elif not _accepts(fields[name], value) and not _out_of_range(fields[name], value):
                mismatches.add(name, f"{_json_type_name(value)} where {fields[name]} was expected", record_id)
        for name, kind in fields.items():
            value = payload.get(name)
            if _out_of_range(kind, value):
                reasons.append(f"{name} out of range: {str(value)[:40]} does not fit a {kind} column")
                value = None
            elif not _accepts(kind, value):
                value = None
            elif isinstance(kind, TimestamptzType) and value is not None:
                parsed = parse_timestamp(value)
                if parsed is None:
                    reasons.append(f"{name} unparseable: {value[:40]!r}")
                value = parsed
            columns[name].append(value)
        parse_reasons.append(reasons)
    if mismatches.problems:
        raise SchemaMismatchError(mismatches.problems, dict(mismatches.examples))

    arrays: dict[str, pa.Array | pa.ChunkedArray] = {
        name: pa.array(values, type=_arrow_type(fields[name])) for name, values in columns.items()
    }
    arrays["payload"] = raw["body"]
    for name in _LINEAGE_FROM_RAW:
        arrays[name] = raw[name]
    arrays["is_replay"] = is_replay
    arrays["standardized_at"] = pa.array([standardized_at] * raw.num_rows, type=pa.timestamp("us", tz="UTC"))
    arrays[PARSE_REASONS_COLUMN] = pa.array(parse_reasons, type=pa.list_(pa.string()))
    return StandardizeResult(rows=pa.table(arrays), skipped=skipped, unauthorized_replays=unauthorized)


def standardize_chunks(
    chunks: Iterable[pa.Table],
    fields: dict[str, object],
    standardized_at: datetime,
    quarantined_ids: Collection[str] = (),
    grants_of: Callable[[list[str]], Grants] | None = None,
) -> Iterator[StandardizeResult]:
    """:func:`standardize` one chunk of raw rows at a time, so a batch never has to be in memory.

    Every step is row-local (quarantine filter, replay grants, parse, parse reasons), so the rows are
    those of the whole batch. ``grants_of(tokens)`` gives the grants of a chunk's replay tokens (it
    is asked only for chunks that carry some). A schema mismatch still describes the whole batch:
    once a chunk does not fit, the remaining chunks are only checked (nothing more is yielded) and one
    error naming every field is raised at the end -- the caller must not commit what it took from
    the earlier chunks.
    """
    errors: list[SchemaMismatchError] = []
    for chunk in chunks:
        tokens = granted_tokens(chunk)
        grants = grants_of(tokens) if tokens and grants_of is not None else {}
        try:
            result = standardize(chunk, fields, standardized_at, quarantined_ids, grants)
        except SchemaMismatchError as error:
            errors.append(error)
            continue
        if not errors:
            yield result
    if errors:
        raise SchemaMismatchError.combine(errors)


_LINEAGE_FROM_RAW = (
    "batch_id",
    "message_id",
    "original_message_id",
    "sent_timestamp",
    "receive_count",
    "landing_file_key",
    "line_number",
    "ingested_at",
)


def _arrow_type(iceberg_type: object) -> pa.DataType:
    return {
        StringType: pa.large_string(),
        TimestamptzType: pa.timestamp("us", tz="UTC"),
        LongType: pa.int64(),
        IntegerType: pa.int32(),
        DoubleType: pa.float64(),
        BooleanType: pa.bool_(),
    }[type(iceberg_type)]


# --- the vectorised path ---------------------------------------------------------------------------

_READ_TYPES = {
    StringType: pa.string(),
    TimestamptzType: pa.string(),
    LongType: pa.int64(),
    IntegerType: pa.int64(),
    DoubleType: pa.float64(),
    BooleanType: pa.bool_(),
}
# Timestamps Arrow's cast and datetime.fromisoformat read identically; others go through parse_timestamp.
_PLAIN_ISO_TIMESTAMP = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _parse_vectorised(raw: pa.Table, fields: dict[str, object]) -> pa.Table | None:
    """Every body parsed by Arrow into the schema's fields, one row per body; None when the
    definition must decide (a body that is not a one-line object, a field or type that does not fit,
    a column type Arrow is not given here)."""
    if raw.num_rows == 0 or "event_id" not in fields:
        return None
    if any(type(kind) not in _READ_TYPES for kind in fields.values()):
        return None
    body = raw["body"].combine_chunks() if isinstance(raw["body"], pa.ChunkedArray) else raw["body"]
    body = body.cast(pa.large_string())
    if body.null_count:
        return None
    blank = pc.or_(pc.equal(pc.binary_length(body), 0), pc.utf8_is_space(body))
    if pc.any(blank).as_py():
        return None  # the reader skips blank lines: rows would no longer be bodies
    newline = pa.scalar("\n", pa.large_string())
    lines = pc.binary_join_element_wise(body, newline, pa.scalar("", pa.large_string()))
    # The bodies, newline-terminated, are the array's value buffer.
    _, offset_buffer, value_buffer = lines.buffers()
    offsets = pa.Array.from_buffers(pa.int64(), len(lines) + 1, [None, offset_buffer], offset=lines.offset)
    data = value_buffer[offsets[0].as_py() : offsets[-1].as_py()].to_pybytes()
    if data.count(b"\n") != len(body) or b"\r" in data:
        return None  # a body over several lines: one row per body could not be told apart
    schema = pa.schema(
        [(name, _READ_TYPES[type(kind)]) for name, kind in fields.items()] + [("is_replay", pa.bool_())]
    )
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    try:
        parsed = pj.read_json(io.BytesIO(data), parse_options=options)
    except (pa.ArrowException, UnicodeDecodeError, ValueError):
        return None
    if parsed.num_rows != raw.num_rows:
        return None
    return parsed  # the joined copies of the bodies are freed here, before the batch is written


def _timestamps(strings: pa.ChunkedArray, name: str) -> tuple[pa.Array, list[list[str]] | None]:
    """The column as timestamptz, and the parse reasons per row (None when there are none)."""
    plain = pc.match_substring_regex(strings, _PLAIN_ISO_TIMESTAMP)
    if pc.all(pc.or_kleene(plain, pc.is_null(strings))).as_py():
        try:
            return pc.cast(strings, pa.timestamp("us", tz="UTC")), None
        except pa.ArrowException:
            pass  # e.g. 30 February: parse_timestamp names the value
    values, reasons = [], []
    for text in strings.to_pylist():
        parsed = parse_timestamp(text) if text is not None else None
        reasons.append([f"{name} unparseable: {text[:40]!r}"] if text is not None and parsed is None else [])
        values.append(parsed)
    return pa.array(values, type=pa.timestamp("us", tz="UTC")), reasons


def _standardize_vectorised(
    raw: pa.Table,
    fields: dict[str, object],
    standardized_at: datetime,
    quarantined_ids: Collection[str],
    grants: Grants,
    parsed: pa.Table,
) -> StandardizeResult:
    record_ids = quarantine_ids(parsed["event_id"], raw["original_message_id"])
    is_replay, unauthorized = _replays(raw, record_ids, parsed["is_replay"], grants)
    raw, keep, skipped = _split_quarantined(raw, record_ids, is_replay, quarantined_ids)
    parsed = parsed.filter(keep)
    count = raw.num_rows
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    reasons: list[list[str]] | None = None
    for name, kind in fields.items():
        column = parsed[name]
        if isinstance(kind, TimestamptzType):
            column, column_reasons = _timestamps(column, name)
            if column_reasons is not None:
                reasons = (
                    column_reasons
                    if reasons is None
                    else [a + b for a, b in zip(reasons, column_reasons, strict=True)]
                )
        arrays[name] = pc.cast(column, _arrow_type(kind))
    arrays["payload"] = raw["body"]
    for name in _LINEAGE_FROM_RAW:
        arrays[name] = raw[name]
    arrays["is_replay"] = pc.cast(is_replay.filter(keep), pa.bool_())
    arrays["standardized_at"] = pa.repeat(pa.scalar(standardized_at, pa.timestamp("us", tz="UTC")), count)
    arrays[PARSE_REASONS_COLUMN] = (
        pa.array(reasons, type=pa.list_(pa.string()))
        if reasons is not None
        else pa.ListArray.from_arrays(pa.array([0] * (count + 1), pa.int32()), pa.array([], pa.string()))
    )
    return StandardizeResult(rows=pa.table(arrays), skipped=skipped, unauthorized_replays=unauthorized)
