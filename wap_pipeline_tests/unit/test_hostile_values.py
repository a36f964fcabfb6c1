"""Well-formed JSON with hostile values never crashes a step (issue: "no value can wedge the pipeline").

Arbitrary objects go the whole way a message goes -- forwarder (envelope) -> landing line -> raw ->
standardize -> audit -> curated plan -> daily totals -- and also through data-patcher's audit of
lines. The only exceptions allowed are the declared ones; every row is either valid (inside every
column's declared domain) or flagged with a reason; and every record is counted exactly once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wap_pipeline.events import make_events
from wap_pipeline.iceberg.schemas import RAW_SCHEMA, STANDARDIZED_SCHEMA, payload_fields
from wap_pipeline.rules.audit import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    MAX_ABS_AMOUNT_MINOR,
    MAX_FUTURE_SKEW,
    MAX_KEY_LENGTH,
    tag_invalid,
)
from wap_pipeline.rules.cleaning import audit_lines
from wap_pipeline.rules.curated import TotalsOverflowError, daily_totals, plan_merge
from wap_pipeline.rules.envelope import Rejection, landing_line, raw_table, to_landing_record
from wap_pipeline.rules.standardize import SchemaMismatchError, standardize

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)  # the batch's reference time: when it landed
FIELDS = payload_fields(STANDARDIZED_SCHEMA)
BASE = make_events(1, seed=17, now=NOW)[0]

HOSTILE_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+10:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-10:00",
    "1969-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-28T10:00:00",
    "1764345600",
    (NOW + MAX_FUTURE_SKEW + timedelta(seconds=1)).isoformat(),
]
HOSTILE_STRINGS = ["", " ", "\u200b", "\u202eevil", "a" * 100_000, "\x00", "ok\x1f", "EUR\ufeff"]
HOSTILE_NUMBERS = [2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, 10**15, -(10**15), 1e308, -0.0, 0.5]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_TIMES + HOSTILE_STRINGS + HOSTILE_NUMBERS)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
keys = st.sampled_from([*FIELDS, "is_replay", "loyalty_tier", "meta"]) | st.text(max_size=10)


@st.composite
def bodies(draw) -> str:
    """A JSON object as a producer might send it: a good event with some fields replaced, removed
    or added, or an arbitrary object; sometimes with a key repeated."""
    if draw(st.booleans()):
        obj = dict(BASE)
        for name in draw(st.lists(st.sampled_from(sorted(obj)), max_size=2)):
            obj.pop(name, None)
        obj.update(draw(st.dictionaries(keys, json_values, max_size=3)))
    else:
        obj = draw(st.dictionaries(keys, json_values, max_size=6))
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if obj and draw(st.integers(0, 4)) == 0:  # a duplicate key, which orjson resolves last-wins
        name = draw(st.sampled_from(sorted(obj)))
        text = text[:-1] + f", {json.dumps(name)}: {json.dumps(draw(json_values))}" + "}"
    return text


def land(bodies_: list[str]) -> tuple[pa.Table, int]:
    """What the forwarder and raw do: (raw rows of the bodies it forwards, bodies it rejects)."""
    lines, rejected = [], 0
    for number, body in enumerate(bodies_):
        message = {
            "MessageId": f"m{number}",
            "Body": body,
            "Attributes": {"SentTimestamp": str(int(NOW.timestamp() * 1000)), "ApproximateReceiveCount": "1"},
        }
        record = to_landing_record(message)
        if isinstance(record, Rejection):
            rejected += 1  # not a JSON object within the limits: to the DLQ, by the redrive policy
        else:
            lines.append(landing_line(record))
    return raw_table(b"".join(lines), "landing/f", "b1", NOW, RAW_SCHEMA.as_arrow()), rejected


def assert_valid_rows_are_inside_every_domain(valid: pa.Table) -> None:
    for row in valid.to_pylist():
        assert EARLIEST_EVENT_TIME <= row["event_timestamp"] < LATEST_EVENT_TIME
        assert row["event_timestamp"] <= NOW + MAX_FUTURE_SKEW
        assert -MAX_ABS_AMOUNT_MINOR < row["amount_minor"] < MAX_ABS_AMOUNT_MINOR
        for name in ("event_id", "idempotency_key", "account_id", "event_type"):
            assert isinstance(row[name], str) and row[name].strip() and len(row[name]) <= MAX_KEY_LENGTH


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bodies(), min_size=1, max_size=4))
def test_hostile_objects_are_flagged_never_raised_and_every_record_is_counted(batch):
    raw, rejected = land(batch)
    assert raw.num_rows + rejected == len(batch)

    # data-patcher's audit of the same lines (inspect / secure-clean): never an exception.
    lines = [(n, body.encode()) for n, body in enumerate(raw["body"].to_pylist(), start=1)]
    by_line = audit_lines(lines, FIELDS, NOW)
    assert set(by_line) == {n for n, _ in lines}

    try:
        result = standardize(raw, FIELDS, NOW)
    except SchemaMismatchError as error:  # declared: the batch stops, naming fields and examples
        assert error.problems
        assert any(reason.startswith("schema mismatch") for reasons in by_line.values() for reason in reasons)
        return
    rows = tag_invalid(result.rows, NOW)
    assert rows.num_rows + result.skipped.num_rows == raw.num_rows
    flags, reasons = rows["invalid_flag"].to_pylist(), rows["invalid_reasons"].to_pylist()
    assert all(flag == bool(why) for flag, why in zip(flags, reasons, strict=True)), "flagged iff a reason"
    assert [sorted(r) for r in reasons] == [sorted(by_line[n]) for n in rows["line_number"].to_pylist()]

    valid = rows.filter(pc.invert(rows["invalid_flag"]))
    assert_valid_rows_are_inside_every_domain(valid)
    plan = plan_merge(valid, valid.schema.empty_table())
    assert plan.accounted == valid.num_rows
    try:
        totals = daily_totals(plan.winners)
    except TotalsOverflowError:  # declared: never a wrapped sum
        return
    assert sum(totals["events"].to_pylist()) == plan.winners.num_rows


def test_the_named_hostile_values_are_each_flagged_with_a_reason():
    cases = {
        "year 1": {"event_timestamp": "0001-01-01T00:00:00Z"},
        "year 1 east of UTC": {"event_timestamp": "0001-01-01T00:00:00+10:00"},
        "year 9999 west of UTC": {"event_timestamp": "9999-12-31T23:59:59-10:00"},
        "year 9999": {"event_timestamp": "9999-12-31T23:59:59Z"},
        "before 1970": {"event_timestamp": "1969-12-31T23:59:59Z"},
        "int64 max": {"amount_minor": 2**63 - 1},
        "int64 min": {"amount_minor": -(2**63)},
        "past int64": {"amount_minor": 2**63},
        "past int64, negative": {"amount_minor": -(2**63) - 1},
        "100k-character account": {"account_id": "a" * 100_000},
        "long event_id": {"event_id": "e" * (MAX_KEY_LENGTH + 1)},
        "long event_type": {"event_type": "t" * (MAX_KEY_LENGTH + 1)},
    }
    bodies_ = [json.dumps({**BASE, **change}) for change in cases.values()]
    bodies_.append(json.dumps(BASE)[:-1] + ', "amount_minor": 5}')  # a repeated key
    raw, rejected = land(bodies_)
    assert rejected == 0
    rows = tag_invalid(standardize(raw, FIELDS, NOW).rows, NOW)
    for name, flagged, why in zip(
        [*cases, "repeated key"],
        rows["invalid_flag"].to_pylist(),
        rows["invalid_reasons"].to_pylist(),
        strict=True,
    ):
        assert flagged and why, f"{name} was not flagged"
