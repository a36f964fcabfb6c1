"""inspect / secure-clean logic (rules/cleaning.py): examples, then properties over arbitrary bytes."""

from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from wap_pipeline.events import make_events
from wap_pipeline.iceberg.schemas import STANDARDIZED_SCHEMA, payload_fields
from wap_pipeline.rules.cleaning import (
    CLEANED,
    INVALID,
    UNCHANGED,
    CleanSummary,
    InspectSummary,
    Line,
    clean_line,
    clean_lines,
    find_unprintable,
    inspect_lines,
    iter_lines,
    parse_chars,
)
from wap_pipeline.rules.envelope import landing_line, parse_body, raw_rows, to_landing_record
from wap_pipeline.rules.quarantine import quarantine_ids

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
FIELDS = payload_fields(STANDARDIZED_SCHEMA)
EVENTS = make_events(8, seed=5, now=NOW)
for _event in EVENTS:
    _event["event_timestamp"] = "2026-11-28T11:00:00.000Z"


def landed(event: dict, message_id: str = "m-1", attributes: dict | None = None) -> bytes:
    """The line the forwarder lands for a message with this event as its body (no newline)."""
    message = {
        "MessageId": message_id,
        "Body": orjson.dumps(event).decode(),
        "Attributes": {"SentTimestamp": "1764345600000", "ApproximateReceiveCount": "1"},
    }
    if attributes:
        message["MessageAttributes"] = {k: {"StringValue": v} for k, v in attributes.items()}
    return landing_line(to_landing_record(message)).rstrip(b"\n")


def line(data: bytes, number: int = 1) -> Line:
    return Line(number, 0, data, len(data))


def inspect(data: bytes, chunk_lines: int = 2000) -> tuple[list, InspectSummary]:
    summary = InspectSummary()
    reports = list(inspect_lines(iter_lines([data]), FIELDS, summary, NOW, chunk_lines))
    return reports, summary


def clean(data: bytes, chars: str, chunk_lines: int = 2000) -> tuple[list, CleanSummary]:
    summary = CleanSummary()
    results = list(clean_lines(iter_lines([data]), parse_chars(chars), FIELDS, summary, now=NOW))
    return results, summary


# --- examples --------------------------------------------------------------------------------------


def test_parse_chars_takes_escapes_and_literals_and_refuses_structure():
    assert parse_chars(r"\x1F") == {"\x1f"}
    assert parse_chars(r"\x1f\u200Bé\t") == {"\x1f", "\u200b", "é", "\t"}
    for bad in ("", r"\n", '"', "{"):
        with pytest.raises(ValueError):
            parse_chars(bad)


def test_lines_split_like_the_raw_layer_across_chunk_boundaries():
    data = b'{"a":1}\n\n{"b":2}\r\nlast'
    for cut in range(len(data) + 1):
        lines = list(iter_lines([data[:cut], data[cut:]]))
        assert [(x.number, x.offset, x.data) for x in lines] == [
            (1, 0, b'{"a":1}'),
            (2, 8, b""),
            (3, 9, b'{"b":2}\r'),
            (4, 18, b"last"),
        ]
    numbers = [r["line_number"] for r in raw_rows(data, "k", "b", NOW)]
    assert numbers == [1, 3, 4]
    long = list(iter_lines([b"x" * 10, b"y" * 10, b"\nok\n"], max_line_bytes=15))
    assert [(x.number, x.data, x.size) for x in long] == [(1, None, 20), (2, b"ok", 2)]


def test_unprintable_characters_are_located_raw_in_the_envelope_and_in_the_body():
    event = {**EVENTS[0], "currency": "EU\x1fR"}
    envelope = landed(event, attributes={"idempotency_key": "k\x07ey"}).decode()
    found = find_unprintable(envelope, is_envelope=True)
    assert [char for _, char in found] == ["\x07", "\x1f"]
    assert envelope[found[0][0] - 1 : found[0][0] + 5] == "\\u0007"
    assert envelope[found[1][0] - 1 : found[1][0] + 6] == "\\\\u001f"
    # In a bare event (no envelope) a doubly escaped sequence is text, not a control character.
    assert find_unprintable('{"a": "x\\\\u001f", "b": "\x1f"}', is_envelope=False) == [(25, "\x1f")]


def test_inspect_reports_line_column_ids_and_the_audit_rules():
    lines = [landed(e, f"m-{i}") for i, e in enumerate(EVENTS)]
    lines[5] = landed({**EVENTS[5], "idempotency_key": "ab\x1fc"}, "m-5")
    lines[6] = b'{"event_id": "e\x1f"}'
    lines.insert(2, b"\xff\xfe not utf-8")
    reports, summary = inspect(b"\n".join(lines) + b"\n", chunk_lines=3)
    assert [r.line for r in reports] == [3, 7, 8]
    assert [p.kind for p in reports[0].problems] == ["invalid_utf8", "invalid_utf8", "json", "audit"]
    assert reports[0].problems[-1].message == (
        "Line 3 fails the audit: payload is not a JSON object: every CDE field is missing."
    )
    assert reports[0].problems[0].byte_offset == len(lines[0]) + len(lines[1]) + 2
    assert reports[1].ids.message_id == "m-5" and reports[1].ids.idempotency_key == "ab\x1fc"
    assert [p.message.split(", column")[0] for p in reports[1].problems if p.kind == "unprintable"] == [
        "Found unprintable character '\\x1F' at line 7"
    ] * 2
    assert {p.rule for p in reports[1].problems if p.kind == "audit"} == {"idempotency_key_unprintable"}
    assert reports[2].problems[0].message == "Found unprintable character '\\x1F' at line 8, column 16."
    assert summary.lines == 9 and summary.lines_with_problems == 3


def test_inspect_finds_the_one_record_of_a_chunk_that_does_not_fit_the_schema():
    lines = [landed(e, f"m-{i}") for i, e in enumerate(EVENTS)]
    lines[4] = landed({**EVENTS[4], "loyalty_tier": "gold"}, "m-4")
    reports, _ = inspect(b"\n".join(lines))
    (report,) = reports
    assert report.line == 5
    assert report.problems[0].rule == "schema mismatch"
    assert "loyalty_tier" in report.problems[0].message


def test_clean_keeps_the_original_metadata_and_cleans_the_key_everywhere():
    original = landed({**EVENTS[1], "idempotency_key": "k-\x1f1", "event_id": "evt\x1f9"}, "m-7")
    (result,), summary = clean(original, r"\x1F")
    assert result.status == CLEANED
    assert (result.ids.message_id, result.ids.idempotency_key) == ("m-7", "k-\x1f1")
    # An event_id with a control character is no usable key: the original is masked by its message id.
    assert result.original_quarantine_id == "message:m-7"
    assert result.attributes == {"is_replay": "true", "original_message_id": "m-7", "idempotency_key": "k-1"}
    assert orjson.loads(result.body) == {**EVENTS[1], "idempotency_key": "k-1", "event_id": "evt9"}
    copy = orjson.loads(result.output)
    assert copy["idempotency_key"] == "k-1" and orjson.loads(copy["body"]) == orjson.loads(result.body)
    assert summary.as_dict() == {
        "lines": 1,
        "characters_removed": 3,
        "cleaned": 1,
        "invalid": 0,
        "unchanged": 0,
    }


def test_a_raw_character_that_breaks_the_json_is_removed_from_the_text():
    event = orjson.dumps(EVENTS[2]).decode()
    broken = event.replace('"currency":"', '"currency":"\x1f').encode()
    (result,), _ = clean(broken, r"\x1F")
    assert result.status == CLEANED and orjson.loads(result.body) == EVENTS[2]


def test_a_record_still_invalid_after_cleaning_is_listed_not_cleaned():
    bad = landed({**EVENTS[3], "idempotency_key": "\x1f"})
    (result,), summary = clean(bad, r"\x1F")
    assert result.status == INVALID and result.body is None
    assert result.reasons == ["after cleaning: idempotency_key_missing (idempotency_key is null or blank)"]
    assert summary.by_status[INVALID] == 1


def test_a_line_without_the_characters_is_unchanged_byte_for_byte():
    data = landed(EVENTS[4])
    assert clean_line(line(data), {"\x1f"}).status == UNCHANGED
    (result,), _ = clean(data, r"\x1F")
    assert result.status == UNCHANGED and result.output == data


# --- properties ------------------------------------------------------------------------------------

_INJECTABLE = st.sampled_from(["\x1f", "\x00", "\x07", "\x7f", "\u0085", "\u200b", "\ufeff"])


@st.composite
def landing_lines(draw) -> bytes:
    """A landed line: a realistic envelope with characters slipped into its strings, or one broken
    at the byte level, or arbitrary bytes."""
    kind = draw(st.sampled_from(["envelope", "raw", "bytes", "bare"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")))
    event = dict(draw(st.sampled_from(EVENTS)))
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=3)):
        if isinstance(event[name], str):
            at = draw(st.integers(0, len(event[name])))
            event[name] = event[name][:at] + draw(_INJECTABLE) + event[name][at:]
    if draw(st.booleans()):
        event[draw(st.text(max_size=5))] = draw(st.text(max_size=10))
    data = landed(event, draw(st.text(min_size=1, max_size=8)))
    if kind == "bare":
        data = orjson.dumps(event)
    if kind == "raw":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(_INJECTABLE).encode() + data[at:]
    return data.replace(b"\n", b"")


FILES = st.lists(landing_lines(), min_size=1, max_size=6).map(lambda lines: b"\n".join(lines))
CHARS = st.sets(_INJECTABLE, min_size=1, max_size=3)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(data=FILES | st.binary(max_size=400), cut=st.integers(0, 400))
def test_inspect_never_crashes_and_reports_only_real_lines(data, cut):
    summary = InspectSummary()
    reports = list(inspect_lines(iter_lines([data[:cut], data[cut:]]), FIELDS, summary, NOW, chunk_lines=2))
    expected_lines = len(data.split(b"\n")) - (1 if data.endswith(b"\n") or not data else 0)
    assert summary.lines == expected_lines
    assert all(1 <= r.line <= expected_lines and r.problems for r in reports)
    assert summary.lines_with_problems == len(reports)


@PROPERTY_SETTINGS
@given(data=FILES | st.binary(max_size=400), chars=CHARS)
def test_secure_clean_accounts_for_every_line_and_only_ever_yields_valid_json(data, chars):
    summary = CleanSummary()
    lines = list(iter_lines([data]))
    results = list(clean_lines(lines, chars, FIELDS, summary, now=NOW, chunk_lines=2))
    assert [r.line for r in results] == [x.number for x in lines], "every line comes out exactly once"
    assert summary.by_status[CLEANED] + summary.by_status[INVALID] + summary.by_status[UNCHANGED] == len(
        lines
    )
    for result, source in zip(results, lines, strict=True):
        event(result.status)
        if result.status == UNCHANGED:
            assert result.output == source.data and result.removed == 0
        elif result.status == INVALID:
            assert result.reasons and result.body is None
        else:
            assert result.removed > 0
            payload = orjson.loads(result.body)
            assert isinstance(parse_body(result.body), dict)
            assert not any(c in orjson.dumps(payload).decode("unicode_escape", "ignore") for c in chars)
            assert result.attributes["is_replay"] == "true"
            if result.ids.original_message_id:
                assert result.attributes["original_message_id"] == result.ids.original_message_id
            assert result.attributes.get("idempotency_key") == payload.get("idempotency_key") or (
                orjson.loads(result.output).get("idempotency_key") == result.attributes.get("idempotency_key")
            )


@PROPERTY_SETTINGS
@given(event=st.sampled_from(EVENTS), data=st.data())
def test_cleaning_what_was_slipped_in_gives_back_the_original_record(event, data):
    char = data.draw(_INJECTABLE)
    dirty = dict(event)
    name = data.draw(st.sampled_from(["event_id", "idempotency_key", "account_id", "currency", "event_type"]))
    at = data.draw(st.integers(0, len(dirty[name])))
    dirty[name] = dirty[name][:at] + char + dirty[name][at:]
    result = clean_line(line(landed(dirty, "m-9")), {char})
    assert result.status == CLEANED
    assert orjson.loads(result.body) == event
    expected_id = quarantine_ids(pa.array([dirty["event_id"]]), pa.array(["m-9"]))[0].as_py()
    assert result.ids.message_id == "m-9" and result.original_quarantine_id == expected_id
    assert result.attributes["idempotency_key"] == event["idempotency_key"]


def test_a_cleaning_that_changes_a_key_says_so_and_one_that_does_not_says_nothing():
    keyed = {**EVENTS[0], "idempotency_key": "ab\u200bcd", "event_id": "evt\u200b1"}
    (changed,), _ = clean(landed(keyed), r"\u200B")
    assert changed.status == "cleaned"
    assert changed.key_changes == [
        "idempotency_key: 'ab\\u200Bcd' -> 'abcd'",
        "event_id: 'evt\\u200B1' -> 'evt1'",
    ]
    (kept,), _ = clean(landed({**EVENTS[1], "currency": "EU\x1fR"}), r"\x1F")
    assert kept.status == "cleaned" and kept.key_changes == []
