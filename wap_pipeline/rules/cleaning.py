"""Inspect and clean landing files, line by line, in bounded memory -- plain functions, no AWS.

A landing file is NDJSON: each line is a landing envelope (see :mod:`wap_pipeline.rules.envelope`)
whose ``body`` is the SQS message body, itself a JSON text. A bad character can therefore sit in
three places: raw in the line (the line is no longer JSON), escaped in an envelope string
(``\\u001f``), or escaped in the body (``\\\\u001f`` in the line). Both functions look at all three.

* :func:`inspect_lines` reports, per line: invalid UTF-8 (with byte offsets), unprintable (control)
  characters with line and column, JSON errors with position, and the problems the standardized
  audit would find -- by running the pipeline's own parsing (:func:`~wap_pipeline.rules.envelope.raw_rows`),
  standardization and CDE rules (:mod:`wap_pipeline.rules.audit`) over the lines, never a copy of them.
* :func:`clean_lines` removes the given characters at every level, after reading the record's original
  metadata (message id, idempotency_key, event_id), and re-validates each cleaned record with the same
  rules. Every input line comes out exactly once: ``cleaned`` (valid, to re-inject), ``invalid``
  (changed but still invalid: listed, never injected) or ``unchanged``.

Lines are split on ``\\n`` exactly as the raw layer splits them, so line numbers agree with the raw
table's ``line_number`` column. Columns are 1-based character positions in the line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa

from wap_pipeline.iceberg.schemas import RAW_SCHEMA
from wap_pipeline.rules.audit import RULES, tag_invalid
from wap_pipeline.rules.envelope import (
    DEFAULT_LIMITS,
    PayloadLimits,
    json_object,
    parse_body,
    raw_rows,
    split_landing_line,
)
from wap_pipeline.rules.standardize import SchemaMismatchError, quarantine_split, standardize

READ_CHUNK_BYTES = 1 << 20
# A landing line holds one Firehose record (at most 1,000 KiB); anything far longer is not read into memory.
MAX_LINE_BYTES = 16 << 20
# Lines validated together (one Arrow table through the audit rules): bounds memory, keeps it fast.
VALIDATION_CHUNK_LINES = 2000
_MAX_PROBLEMS_PER_KIND = 20

# Unicode category Cc: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A JSON escape that may decode to a control character, with the run of backslashes before it.
_ESCAPE = re.compile(r"(\\+)(u00[0-9a-fA-F]{2}|[bfnrt])")
_SHORT_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# What SQS accepts in a message body or attribute (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000+).
_NOT_SQS_SAFE = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_AN_OBJECT = "payload is not a JSON object"  # the reason standardize gives
_RULE_DESCRIPTIONS = {rule.name: rule.description for rule in RULES}
_CHAR_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})|\\([tnr0\\])")


def sqs_unsafe(text: str) -> str | None:
    """Why SQS would refuse ``text`` as a message body or attribute value (None: it accepts it)."""
    unsafe = _NOT_SQS_SAFE.search(text)
    return f"'{show_char(unsafe.group())}' is not allowed by SQS" if unsafe else None


def show_char(char: str) -> str:
    """A character as an operator can read it: ``\\x1F``, ``\\u200B``, or itself."""
    if char.isprintable() and char != "\\":
        return char
    code = ord(char)
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def show_text(text: str | None) -> str | None:
    """Text safe to print: control and other unprintable characters shown escaped."""
    if text is None:
        return None
    return "".join(c if c.isprintable() else show_char(c) for c in text)


def parse_chars(spec: str) -> frozenset[str]:
    """Characters to remove, from ``--remove-chars``: literal characters and ``\\x1F``, ``\\u200B``,
    ``\\U0001F600``, ``\\t``, ``\\n``, ``\\r``, ``\\0``, ``\\\\`` escapes, in any mix."""
    chars: set[str] = set()
    position = 0
    for match in _CHAR_ESCAPE.finditer(spec):
        chars.update(spec[position : match.start()])
        hex_digits = match.group(1) or match.group(2) or match.group(3)
        if hex_digits:
            chars.add(chr(int(hex_digits, 16)))
        else:
            chars.add({"t": "\t", "n": "\n", "r": "\r", "0": "\x00", "\\": "\\"}[match.group(4)])
        position = match.end()
    chars.update(spec[position:])
    if not chars:
        raise ValueError("no characters to remove")
    if "\n" in chars:
        raise ValueError("a newline separates records; it cannot be removed")
    if chars & set('{}[]":,'):
        raise ValueError("JSON structural characters cannot be removed")
    return frozenset(chars)


# --- reading lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    number: int
    """1-based, as the raw layer numbers lines."""
    offset: int
    """Byte offset of the line's first byte in the file."""
    data: bytes | None
    """The line without its newline; None when it is longer than the limit (not read into memory)."""
    size: int


def iter_lines(chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Split a stream of byte chunks into lines on ``\\n``, holding at most one line in memory."""
    number = 0
    offset = 0
    buffer = bytearray()
    size = 0
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            size += len(piece)
            if size <= max_line_bytes:
                buffer += piece
            else:
                buffer.clear()
            if end < 0:
                break
            number += 1
            yield Line(number, offset, bytes(buffer) if size <= max_line_bytes else None, size)
            offset += size + 1
            buffer.clear()
            size = 0
            start = end + 1
    if size:
        yield Line(number + 1, offset, bytes(buffer) if size <= max_line_bytes else None, size)


def _chunked(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- what one line holds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordIds:
    message_id: str | None = None
    original_message_id: str | None = None
    idempotency_key: str | None = None
    event_id: str | None = None

    def as_dict(self) -> dict:
        return {
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "idempotency_key": self.idempotency_key,
            "event_id": self.event_id,
        }

    def describe(self) -> str:
        parts = [f"{name}={show_text(value)}" for name, value in self.as_dict().items() if value]
        return ", ".join(parts) if parts else "no record ids readable"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class _Parsed:
    envelope: dict | None
    """The landing envelope, when the line is one (a JSON object with a string ``body``)."""
    body: str | None
    """The message body: the envelope's ``body``, or the whole line when it is not an envelope."""
    payload: dict | None
    """The body as a JSON object, when it is one."""


def _parse(text: str) -> _Parsed:
    envelope, body = split_landing_line(text)
    return _Parsed(envelope, body, json_object(body))


def _ids(parsed: _Parsed) -> RecordIds:
    envelope = parsed.envelope or {}
    payload = parsed.payload or {}
    message_id = _str(envelope.get("message_id"))
    return RecordIds(
        message_id=message_id,
        original_message_id=_str(envelope.get("original_message_id")) or message_id,
        idempotency_key=_str(envelope.get("idempotency_key")) or _str(payload.get("idempotency_key")),
        event_id=_str(payload.get("event_id")),
    )


@dataclass(frozen=True)
class Problem:
    kind: str
    """``too_long``, ``invalid_utf8``, ``unprintable``, ``json`` or ``audit``."""
    message: str
    column: int | None = None
    byte_offset: int | None = None
    char: str | None = None
    rule: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _utf8_problems(line: Line) -> list[Problem]:
    problems = []
    data = line.data or b""
    position = 0
    while position < len(data) and len(problems) < _MAX_PROBLEMS_PER_KIND:
        try:
            data[position:].decode("utf-8")
            break
        except UnicodeDecodeError as error:
            bad = position + error.start
            problems.append(
                Problem(
                    "invalid_utf8",
                    f"Invalid UTF-8 at line {line.number}, byte {bad + 1} of the line "
                    f"(byte offset {line.offset + bad} in the file): {data[bad : position + error.end]!r}.",
                    byte_offset=line.offset + bad,
                )
            )
            position += error.end
    return problems


def find_unprintable(text: str, is_envelope: bool) -> list[tuple[int, str]]:
    """(1-based column, character) of every control character in a line: raw, escaped in an
    envelope string (``\\u001f``), or -- in an envelope -- escaped in the body (``\\\\u001f``)."""
    found = [(m.start() + 1, m.group()) for m in _CONTROL.finditer(text)]
    for match in _ESCAPE.finditer(text):
        escape = match.group(2)
        char = chr(int(escape[1:], 16)) if escape[0] == "u" else _SHORT_ESCAPES[escape]
        if not _CONTROL.match(char):
            continue
        backslashes = len(match.group(1))
        if backslashes % 2 == 1:  # one level down: a character of an envelope (or line) string
            found.append((match.start() + backslashes, char))
        elif is_envelope and backslashes % 4 == 2:  # two levels down: a character of the body's strings
            found.append((match.start() + backslashes - 1, char))
    return sorted(found)


def _json_problems(line: Line, text: str, parsed: _Parsed) -> list[Problem]:
    problems = []
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as error:
        problems.append(
            Problem(
                "json",
                f"Invalid JSON at line {line.number}, column {error.colno}: {error.msg}.",
                column=error.colno,
            )
        )
        return problems
    if parsed.envelope is not None:
        reason = parse_body(parsed.body or "", PayloadLimits(max_bytes=1 << 62, max_depth=1 << 30))
        if isinstance(reason, str):
            problems.append(
                Problem("json", f"The message body at line {line.number} is not usable: {reason}.")
            )
    return problems


def scan_line(line: Line) -> tuple[RecordIds, list[Problem]]:
    """Character- and JSON-level problems of one line, and the record ids it carries."""
    if line.data is None:
        return RecordIds(), [
            Problem("too_long", f"Line {line.number} is {line.size} bytes long; it was not read.")
        ]
    problems = _utf8_problems(line)
    text = line.data.decode("utf-8", errors="replace")
    parsed = _parse(text)
    for column, char in find_unprintable(text, parsed.envelope is not None)[:_MAX_PROBLEMS_PER_KIND]:
        problems.append(
            Problem(
                "unprintable",
                f"Found unprintable character '{show_char(char)}' at line {line.number}, column {column}.",
                column=column,
                char=show_char(char),
            )
        )
    problems += _json_problems(line, text, parsed)
    return _ids(parsed), problems


# --- the pipeline's own audit, over lines -----------------------------------------------------------


def audit_reasons(rows: list[dict], fields: dict[str, object], reference: datetime) -> list[list[str]]:
    """Why the standardized audit would flag each raw row (empty: it passes). A schema mismatch stops
    a whole batch; here the rows are split until the mismatching ones are found."""
    if not rows:
        return []
    table = pa.Table.from_pylist(rows, schema=RAW_SCHEMA.as_arrow())
    try:
        result = standardize(table, fields, reference)
    except SchemaMismatchError as error:
        if len(rows) == 1:
            return [
                [f"schema mismatch: {name}: {problem}" for name, problem in sorted(error.problems.items())]
            ]
        middle = len(rows) // 2
        return audit_reasons(rows[:middle], fields, reference) + audit_reasons(
            rows[middle:], fields, reference
        )
    return tag_invalid(result.rows, reference)["invalid_reasons"].to_pylist()


def audit_lines(
    lines: list[tuple[int, bytes]], fields: dict[str, object], reference: datetime
) -> dict[int, list[str]]:
    """For (line number, line bytes) pairs: line number -> audit reasons, as the pipeline would find
    them (raw parsing, standardization, CDE rules) in a batch whose reference time (landing time) is
    ``reference``. Blank lines are not records and are left out."""
    data = b"\n".join(content for _, content in lines)
    rows = raw_rows(data, "inspect", "inspect", reference)
    numbers = [number for number, _ in lines]
    for row in rows:
        row["line_number"] = numbers[row["line_number"] - 1]
    return {
        row["line_number"]: reasons
        for row, reasons in zip(rows, audit_reasons(rows, fields, reference), strict=True)
    }


def describe_reason(reason: str) -> str:
    """An audit reason with its rule's description, as an operator reads it."""
    name = reason.split(":", 1)[0]
    description = _RULE_DESCRIPTIONS.get(name)
    return f"{name} ({description})" if description else reason


# --- inspect ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineReport:
    line: int
    offset: int
    ids: RecordIds
    problems: list[Problem]

    def as_dict(self) -> dict:
        return {
            "line": self.line,
            "byte_offset": self.offset,
            "ids": self.ids.as_dict(),
            "problems": [p.as_dict() for p in self.problems],
        }


@dataclass
class InspectSummary:
    lines: int = 0
    bytes: int = 0
    records: int = 0
    lines_with_problems: int = 0
    problems: Counter = field(default_factory=Counter)
    audit_reasons: Counter = field(default_factory=Counter)

    @property
    def clean(self) -> bool:
        return self.lines_with_problems == 0

    def as_dict(self) -> dict:
        return {
            "lines": self.lines,
            "bytes": self.bytes,
            "records": self.records,
            "lines_with_problems": self.lines_with_problems,
            "problems": dict(sorted(self.problems.items())),
            "audit_reasons": dict(sorted(self.audit_reasons.items())),
        }


def inspect_lines(
    lines: Iterable[Line],
    fields: dict[str, object],
    summary: InspectSummary,
    landed_at: datetime,
    chunk_lines: int = VALIDATION_CHUNK_LINES,
) -> Iterator[LineReport]:
    """A report for every line that has a problem, in order; ``summary`` is updated as lines go by.
    ``landed_at`` (when the file landed) is the audit's time reference, as in the pipeline."""
    for chunk in _chunked(lines, chunk_lines):
        reasons = audit_lines(
            [(line.number, line.data) for line in chunk if line.data is not None], fields, landed_at
        )
        for line in chunk:
            summary.lines += 1
            summary.bytes = max(summary.bytes, line.offset + line.size)
            ids, problems = scan_line(line)
            if line.number in reasons:
                summary.records += 1
            line_reasons = reasons.get(line.number, [])
            if _NOT_AN_OBJECT in line_reasons:  # every CDE rule fails with it: say it once
                line_reasons = [f"{_NOT_AN_OBJECT}: every CDE field is missing"]
            for reason in line_reasons:
                name = reason.split(":", 1)[0]
                summary.audit_reasons[name] += 1
                problems.append(
                    Problem(
                        "audit",
                        f"Line {line.number} fails the audit: {describe_reason(reason)}.",
                        rule=name,
                    )
                )
            if problems:
                summary.lines_with_problems += 1
                for problem in problems:
                    summary.problems[problem.kind] += 1
                yield LineReport(line.number, line.offset, ids, problems)


# --- secure-clean ----------------------------------------------------------------------------------

UNCHANGED = "unchanged"
CLEANED = "cleaned"
INVALID = "invalid"


@dataclass(frozen=True)
class CleanedLine:
    line: int
    status: str
    """``cleaned`` (valid: to re-inject), ``invalid`` (still invalid: listed, not injected), ``unchanged``."""
    ids: RecordIds
    """The original record's ids, read before anything was removed."""
    removed: int = 0
    body: str | None = None
    """The cleaned message body (a JSON object), for ``cleaned`` records."""
    attributes: dict[str, str] = field(default_factory=dict)
    """SQS message attributes of the replay: is_replay, original_message_id, idempotency_key."""
    output: bytes | None = None
    """The line for the cleaned copy of the file (None: the line was too long to read)."""
    reasons: list[str] = field(default_factory=list)
    """Why an ``invalid`` record is still invalid."""
    original_quarantine_id: str | None = None
    """The quarantine id the pipeline gives the original line's record: what the quarantine must mask."""
    key_changes: list[str] = field(default_factory=list)
    """``idempotency_key`` / ``event_id`` changed by the cleaning, as ``name: 'old' -> 'new'``: the
    replay would be a different event to curated, so secure-clean refuses it unless allowed."""

    def as_dict(self) -> dict:
        return {
            "line": self.line,
            "status": self.status,
            "ids": self.ids.as_dict(),
            "original_quarantine_id": self.original_quarantine_id,
            "key_changes": self.key_changes,
            "removed": self.removed,
            "attributes": self.attributes,
            "reasons": self.reasons,
            "body": self.body,
        }


def _strip(value: object, chars: Collection[str], removed: list[int]) -> object:
    """``value`` with ``chars`` removed from every string in it (keys too); counts removals."""
    if isinstance(value, str):
        if not any(c in value for c in chars):
            return value
        kept = "".join(c for c in value if c not in chars)
        removed[0] += len(value) - len(kept)
        return kept
    if isinstance(value, dict):
        return {_strip(key, chars, removed): _strip(item, chars, removed) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip(item, chars, removed) for item in value]
    return value


def _loads(text: str, chars: Collection[str], removed: list[int]) -> tuple[object, str]:
    """Parse ``text`` as JSON; only when that fails, remove ``chars`` from the raw text and try again
    (removing characters from valid JSON text could break its escapes: that is done on values).
    Returns (value or None, the text that was parsed)."""
    try:
        return orjson.loads(text), text
    except orjson.JSONDecodeError:
        pass
    stripped = _strip(text, chars, removed)
    try:
        return orjson.loads(stripped), stripped
    except orjson.JSONDecodeError:
        return None, stripped


def _original_quarantine_id(data: bytes) -> str | None:
    """The quarantine id the standardized layer gives the record of this line (through the raw
    layer's parsing): its event_id, or message:<id> when it has no usable one. What must be masked."""
    rows = raw_rows(data, "", "", datetime.now(UTC))
    if not rows:
        return None
    _, ids = quarantine_split(pa.Table.from_pylist(rows[:1], schema=RAW_SCHEMA.as_arrow()), ())
    return ids[0].as_py()


def _shown(value: str | None) -> str:
    return "none" if value is None else f"'{show_text(value)}'"


def clean_line(line: Line, chars: Collection[str], limits: PayloadLimits = DEFAULT_LIMITS) -> CleanedLine:
    """Remove ``chars`` from one line at every level, keeping the record's original metadata.

    The ids are read from the line as it is, before anything is removed. The result is
    ``unchanged`` when none of the characters was found, else ``invalid`` or (provisionally: the
    audit rules run in :func:`clean_lines`) ``cleaned``, with the replay's body and SQS attributes.
    """
    if line.data is None:
        return CleanedLine(line.number, INVALID, RecordIds(), reasons=["line too long to read"])
    try:
        text = line.data.decode("utf-8")
    except UnicodeDecodeError as error:
        reason = f"not valid UTF-8 at byte {error.start + 1} of the line; it cannot be cleaned"
        return CleanedLine(line.number, INVALID, RecordIds(), output=line.data, reasons=[reason])
    ids = _ids(_parse(text))
    original_quarantine_id = _original_quarantine_id(line.data)
    removed = [0]

    def result(status: str, reason: str | None = None, output: bytes | None = None, **kw) -> CleanedLine:
        return CleanedLine(
            line.number,
            status,
            ids,
            removed[0],
            output=output if output is not None else line.data,
            reasons=[reason] if reason else [],
            original_quarantine_id=original_quarantine_id,
            **kw,
        )

    outer, outer_text = _loads(text, chars, removed)
    envelope = outer if isinstance(outer, dict) and isinstance(outer.get("body"), str) else None
    body_text = envelope["body"] if envelope is not None else outer_text
    payload, body_text = _loads(body_text, chars, removed)
    if not isinstance(payload, dict):
        if removed[0] == 0:
            return result(UNCHANGED)
        return result(INVALID, "the message body is not a JSON object after cleaning")
    before = removed[0]
    payload = _strip(payload, chars, removed)
    new_body = body_text if removed[0] == before else orjson.dumps(payload).decode()
    if envelope is not None:
        cleaned_envelope = _strip({k: v for k, v in envelope.items() if k != "body"}, chars, removed)
        cleaned_envelope["body"] = new_body
        output = orjson.dumps(cleaned_envelope)
        key = _str(cleaned_envelope.get("idempotency_key")) or _str(payload.get("idempotency_key"))
    else:
        output = new_body.encode()
        key = _str(payload.get("idempotency_key"))
    if removed[0] == 0:
        return result(UNCHANGED)
    attributes = {"is_replay": "true"}
    if ids.original_message_id:
        attributes["original_message_id"] = ids.original_message_id
    if key:
        attributes["idempotency_key"] = key
    checked = parse_body(new_body, limits)
    if isinstance(checked, str):
        return result(INVALID, f"after cleaning: {checked}", output)
    for value in (new_body, *attributes.values()):
        unsafe = sqs_unsafe(value)
        if unsafe:
            return result(INVALID, f"after cleaning: {unsafe}", output)
    changes = [
        f"{name}: {_shown(old)} -> {_shown(new)}"
        for name, old, new in (
            ("idempotency_key", ids.idempotency_key, key),
            ("event_id", ids.event_id, _str(payload.get("event_id"))),
        )
        if old != new
    ]
    return result(CLEANED, output=output, body=new_body, attributes=attributes, key_changes=changes)


@dataclass
class CleanSummary:
    lines: int = 0
    removed: int = 0
    by_status: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "lines": self.lines,
            "characters_removed": self.removed,
            **{status: self.by_status[status] for status in (CLEANED, INVALID, UNCHANGED)},
        }


def clean_lines(
    lines: Iterable[Line],
    chars: Collection[str],
    fields: dict[str, object],
    summary: CleanSummary,
    limits: PayloadLimits = DEFAULT_LIMITS,
    now: datetime | None = None,
    chunk_lines: int = VALIDATION_CHUNK_LINES,
) -> Iterator[CleanedLine]:
    """Every line, cleaned, in order. A cleaned record is re-validated as the replay the pipeline will
    see (the quarantine does not apply to it: data-patcher grants it) with the standardized audit's own
    rules; the replay lands when it is re-injected, so ``now`` (default: the clock) is its reference time."""
    now = now or datetime.now(UTC)
    for chunk in _chunked(lines, chunk_lines):
        results = [clean_line(line, chars, limits) for line in chunk]
        candidates = [(r.line, r.output) for r in results if r.status == CLEANED and r.output is not None]
        reasons = audit_lines(candidates, fields, now)
        for cleaned in results:
            if cleaned.status == CLEANED and reasons.get(cleaned.line):
                cleaned = CleanedLine(
                    cleaned.line,
                    INVALID,
                    cleaned.ids,
                    cleaned.removed,
                    output=cleaned.output,
                    reasons=[f"after cleaning: {describe_reason(r)}" for r in reasons[cleaned.line]],
                    original_quarantine_id=cleaned.original_quarantine_id,
                    key_changes=cleaned.key_changes,
                )
            summary.lines += 1
            summary.removed += cleaned.removed
            summary.by_status[cleaned.status] += 1
            yield cleaned
