from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pytest

from wap_pipeline.events import make_events
from wap_pipeline.iceberg.schemas import RAW_SCHEMA, STANDARDIZED_SCHEMA, payload_fields
from wap_pipeline.rules.audit import count_invalid, tag_invalid
from wap_pipeline.rules.replays import ReplayGrant, body_sha256
from wap_pipeline.rules.standardize import SchemaMismatchError, standardize, standardize_chunks

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
FIELDS = payload_fields(STANDARDIZED_SCHEMA)


def raw_table(
    payloads: list, replay: list[bool] | None = None, tokens: list[str | None] | None = None
) -> pa.Table:
    rows = []
    for i, payload in enumerate(payloads):
        body = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
        rows.append(
            {
                "batch_id": "b1",
                "landing_file_key": "landing/f",
                "line_number": i + 1,
                "message_id": f"m{i}",
                "original_message_id": f"m{i}",
                "idempotency_key": None,
                "is_replay": bool(replay and replay[i]),
                "sent_timestamp": NOW,
                "receive_count": 1,
                "body": body,
                "ingested_at": NOW,
                "replay_token": tokens[i] if tokens else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA.as_arrow())


def audited(payloads: list, quarantined=(), replay=None):
    result = standardize(raw_table(payloads, replay), FIELDS, NOW, quarantined)
    return tag_invalid(result.rows, NOW), result.skipped


def grant(token: str, event: dict | str, quarantine_id: str | None = None) -> ReplayGrant:
    """data-patcher's grant for sending ``event`` as a replay with ``token``."""
    body = event if isinstance(event, str) else orjson.dumps(event).decode()
    quarantine_id = quarantine_id or orjson.loads(body)["event_id"]
    return ReplayGrant(token, quarantine_id, body_sha256(body), "support-bob", NOW.isoformat(), "p1")


def test_generated_events_are_all_valid_and_typed():
    events = make_events(50, seed=7, now=NOW)
    rows, skipped = audited(events)
    assert skipped.num_rows == 0
    assert count_invalid(rows).invalid_rows == 0
    assert rows["amount_minor"].type == pa.int64()
    assert rows["event_timestamp"].type == pa.timestamp("us", tz="UTC")
    assert rows["idempotency_key"].to_pylist() == [e["idempotency_key"] for e in events]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"idempotency_key": None}, "idempotency_key_missing"),
        ({"idempotency_key": "   "}, "idempotency_key_missing"),
        ({"idempotency_key": "ab\x1fcd"}, "idempotency_key_unprintable"),
        ({"idempotency_key": "k" * 129}, "idempotency_key_too_long"),
        ({"event_id": ""}, "event_id_missing"),
        ({"event_timestamp": None}, "event_timestamp_missing"),
        ({"event_timestamp": "yesterday"}, "event_timestamp unparseable"),
        ({"event_timestamp": "2026-11-28T10:00:00"}, "event_timestamp unparseable"),  # no offset
        ({"event_timestamp": (NOW + timedelta(days=3)).isoformat()}, "event_timestamp_in_future"),
        ({"currency": "eur"}, "currency_invalid"),
        ({"amount_minor": None}, "amount_missing"),
        ({"amount_minor": 10**15}, "amount_out_of_range"),
        ({"account_id": None}, "account_id_missing"),
        ({"event_type": ""}, "event_type_missing"),
    ],
)
def test_cde_violations_are_tagged_not_dropped(change, reason):
    good, bad = make_events(2, seed=1, now=NOW)
    bad.update(change)
    rows, _ = audited([good, bad])
    assert rows.num_rows == 2
    assert rows["invalid_flag"].to_pylist() == [False, True]
    assert any(r.startswith(reason) for r in rows["invalid_reasons"][1].as_py())
    audit = count_invalid(rows)
    assert audit.invalid_rows == 1
    assert audit.sample_invalid_ids == [bad["event_id"] or "message:m1"]


def test_future_timestamps_are_judged_against_the_batch_reference_time_only():
    """The verdict is a function of the batch (its rows and its landing time), never of the clock."""
    soon, ahead = make_events(2, seed=9, now=NOW)
    soon["event_timestamp"] = (NOW + timedelta(hours=20)).isoformat()
    ahead["event_timestamp"] = (NOW + timedelta(days=3)).isoformat()
    result = standardize(raw_table([soon, ahead]), FIELDS, NOW)
    landed_with_the_events = tag_invalid(result.rows, NOW)
    assert landed_with_the_events["invalid_reasons"].to_pylist() == [[], ["event_timestamp_in_future"]]
    assert tag_invalid(result.rows, NOW).equals(landed_with_the_events), "the same batch, the same verdict"
    landed_days_later = tag_invalid(result.rows, NOW + timedelta(days=5))
    assert landed_days_later["invalid_flag"].to_pylist() == [False, False]


def test_a_body_that_is_not_an_object_is_tagged():
    rows, _ = audited([make_events(1, seed=2, now=NOW)[0], "not json at all"])
    assert rows["invalid_reasons"][1].as_py()[0] == "payload is not a JSON object"


def test_schema_mismatch_names_the_fields_and_examples():
    event, other = make_events(2, seed=3, now=NOW)
    event["amount_minor"] = "12.50"
    other["loyalty_tier"] = "gold"
    with pytest.raises(SchemaMismatchError) as error:
        audited([event, other])
    assert set(error.value.problems) == {"amount_minor", "loyalty_tier"}
    assert "string where long was expected" in error.value.problems["amount_minor"]
    assert error.value.examples["amount_minor"] == [event["event_id"]]
    assert "amount_minor" in str(error.value) and "loyalty_tier" in str(error.value)


def test_booleans_are_not_accepted_as_integers():
    event = make_events(1, seed=4, now=NOW)[0]
    event["amount_minor"] = True
    with pytest.raises(SchemaMismatchError):
        audited([event])


def test_quarantine_masks_originals_but_lets_granted_replays_through():
    original, replay, other = make_events(3, seed=5, now=NOW)
    replay["event_id"] = original["event_id"]
    original["idempotency_key"] = None  # the broken copy
    raw = raw_table([original, replay, other], replay=[False, True, False], tokens=[None, "t1", None])
    result = standardize(raw, FIELDS, NOW, {original["event_id"]}, {"t1": grant("t1", replay)})
    assert result.skipped["event_id"].to_pylist() == [original["event_id"]]
    assert result.skipped["message_id"].to_pylist() == ["m0"]
    rows = tag_invalid(result.rows, NOW)
    assert rows.num_rows == 2
    assert count_invalid(rows).invalid_rows == 0
    assert rows["is_replay"].to_pylist() == [True, False]
    assert result.unauthorized_replays.num_rows == 0


def test_an_unsigned_is_replay_stays_masked_and_is_counted():
    original, copy, other = make_events(3, seed=5, now=NOW)
    copy["event_id"] = original["event_id"]
    raw = raw_table([original, copy, other], replay=[False, True, True])
    result = standardize(raw, FIELDS, NOW, {original["event_id"]})
    assert result.skipped["message_id"].to_pylist() == ["m0", "m1"]
    # The claim on a record that is not quarantined changes nothing but is counted too.
    assert result.rows["is_replay"].to_pylist() == [False]
    assert result.unauthorized_replays["message_id"].to_pylist() == ["m1", "m2"]
    assert result.unauthorized_replays["event_id"].to_pylist() == [original["event_id"], other["event_id"]]


def test_is_replay_in_the_payload_is_ignored_and_counted():
    event = make_events(1, seed=8, now=NOW)[0]
    event["is_replay"] = True
    result = standardize(raw_table([event]), FIELDS, NOW, {event["event_id"]})
    assert result.skipped.num_rows == 1 and result.rows.num_rows == 0
    assert result.unauthorized_replays["message_id"].to_pylist() == ["m0"]
    unquarantined = standardize(raw_table([event]), FIELDS, NOW)
    assert unquarantined.rows["is_replay"].to_pylist() == [False]
    assert unquarantined.unauthorized_replays.num_rows == 1


def test_a_token_counts_only_for_the_record_and_body_it_was_granted_for():
    events = make_events(4, seed=9, now=NOW)
    granted = events[0]
    tampered = {**granted, "amount_minor": granted["amount_minor"] + 1}
    grants = {
        "good": grant("good", granted),
        "other-id": grant("other-id", events[1], quarantine_id="evt_someone_else"),
    }
    payloads = [granted, tampered, events[1], events[2], events[3]]
    tokens = ["good", "good", "other-id", "unknown", None]
    quarantined = {e["event_id"] for e in events}
    raw = raw_table(payloads, replay=[True] * 5, tokens=tokens)
    result = standardize(raw, FIELDS, NOW, quarantined, grants)
    assert result.rows["message_id"].to_pylist() == ["m0"]  # the granted body, under the granted id
    assert result.rows["is_replay"].to_pylist() == [True]
    assert result.skipped["message_id"].to_pylist() == ["m1", "m2", "m3", "m4"]
    assert result.unauthorized_replays["message_id"].to_pylist() == ["m1", "m2", "m3", "m4"]
    # A token without is_replay is a claim too; granted, it is a replay all the same.
    alone = standardize(raw_table([granted], tokens=["good"]), FIELDS, NOW, quarantined, grants)
    assert alone.rows["is_replay"].to_pylist() == [True] and alone.unauthorized_replays.num_rows == 0


def test_chunks_ask_for_the_grants_of_their_own_tokens_only():
    events = make_events(6, seed=12, now=NOW)
    raw = raw_table(events, tokens=[None, None, None, "t4", None, None])
    asked: list[list[str]] = []

    def grants_of(tokens: list[str]) -> dict:
        asked.append(tokens)
        return {"t4": grant("t4", events[3])}

    chunks = [raw.slice(0, 3), raw.slice(3, 3)]
    results = list(standardize_chunks(chunks, FIELDS, NOW, {events[3]["event_id"]}, grants_of))
    assert asked == [["t4"]]
    assert [r.rows.num_rows for r in results] == [3, 3]
    assert results[1].rows["is_replay"].to_pylist() == [True, False, False]


def test_quarantine_masks_records_that_would_break_the_schema():
    bad = make_events(1, seed=6, now=NOW)[0]
    bad["amount_minor"] = "oops"
    rows, skipped = audited([bad], quarantined={bad["event_id"]})
    assert rows.num_rows == 0
    assert skipped.num_rows == 1


def _variants() -> list[tuple[list, list[bool] | None, tuple]]:
    events = make_events(20, seed=11, now=NOW)

    def changed(index: int, **change) -> list:
        copy = [dict(e) for e in events]
        copy[index].update(change)
        return copy

    return [
        (events, None, ()),
        (events, [i % 4 == 0 for i in range(20)], (events[0]["event_id"], events[1]["event_id"])),
        (changed(3, is_replay=True), None, (events[3]["event_id"],)),
        (changed(2, event_timestamp="2026-11-28T10:00:00+02:00"), None, ()),
        (changed(2, event_timestamp="2026-11-28 10:00:00+00:00"), None, ()),  # fromisoformat only
        (changed(2, event_timestamp="2026-02-30T10:00:00Z"), None, ()),  # unparseable: a reason
        (changed(2, event_timestamp="2026-11-28T10:00:00"), None, ()),  # no offset: a reason
        (changed(5, amount_minor=None, currency=None), None, ()),
        (changed(5, event_id=None), None, ()),
        (events[:5] + ['{"event_id": "e", "amount_minor": 1}'], None, ()),
        (events[:5] + ["[1, 2]"], None, ()),  # not an object: the row-by-row path tags it
        (events[:5] + ['{\n"event_id": "e"\n}'], None, ()),  # a body over several lines
        (events[:5] + ["   "], None, ()),
        (events[:5] + ['{"event_id": "e"}{"event_id": "f"}'], None, ()),
        (changed(1, amount_minor=True), None, (events[1]["event_id"],)),  # quarantined misfit
        ([], None, ()),
    ]


@pytest.mark.parametrize(("payloads", "replay", "quarantined"), _variants())
def test_the_vectorised_parse_gives_exactly_the_rows_of_the_definition(
    payloads, replay, quarantined, monkeypatch
):
    from wap_pipeline.rules import standardize as module

    # Rows flagged as replays carry a token; every other one of those is granted.
    claims = [i for i in range(len(payloads)) if replay and replay[i]]
    tokens = [f"t{i}" if i in claims else None for i in range(len(payloads))]
    grants = {f"t{i}": grant(f"t{i}", payloads[i]) for i in claims[::2]}
    raw = raw_table(payloads, replay, tokens)
    fast = standardize(raw, FIELDS, NOW, quarantined, grants)
    monkeypatch.setattr(module, "_parse_vectorised", lambda raw, fields: None)
    slow = standardize(raw, FIELDS, NOW, quarantined, grants)
    assert fast.rows.equals(slow.rows)
    assert fast.skipped.equals(slow.skipped)
    assert fast.unauthorized_replays.equals(slow.unauthorized_replays)


def test_batches_producers_send_take_the_vectorised_path():
    from wap_pipeline.rules.standardize import _parse_vectorised

    assert _parse_vectorised(raw_table(make_events(10, seed=3, now=NOW)), FIELDS) is not None
    assert _parse_vectorised(raw_table([{"event_id": "e", "unknown": 1}]), FIELDS) is None


def test_an_all_valid_batch_is_tagged_like_any_other():
    rows, _ = audited(make_events(5, seed=5, now=NOW))
    mixed, _ = audited(
        make_events(4, seed=5, now=NOW) + [{**make_events(1, seed=6, now=NOW)[0], "currency": "eur"}]
    )
    assert rows.schema == mixed.schema
    assert rows["invalid_flag"].to_pylist() == [False] * 5
    assert rows["invalid_reasons"].to_pylist() == [[]] * 5
    assert mixed["invalid_reasons"].to_pylist()[-1] == ["currency_invalid"]


def test_standardizing_in_chunks_gives_the_rows_of_the_whole_batch():
    events = make_events(30, seed=11, now=NOW)
    events[4]["event_timestamp"] = "yesterday"  # a parse reason
    events[17]["currency"] = "eur"  # a CDE violation
    events[20]["event_id"] = "evt-quarantined"
    whole = raw_table(events)
    expected = standardize(whole, FIELDS, NOW, {"evt-quarantined"})
    chunks = list(
        standardize_chunks(
            [whole.slice(0, 7), whole.slice(7, 13), whole.slice(20)], FIELDS, NOW, {"evt-quarantined"}
        )
    )
    rows = pa.concat_tables([tag_invalid(c.rows, NOW) for c in chunks])
    assert rows.to_pylist() == tag_invalid(expected.rows, NOW).to_pylist()
    assert pa.concat_tables([c.skipped for c in chunks]).to_pylist() == expected.skipped.to_pylist()


def test_a_schema_mismatch_in_chunks_names_every_field_of_the_batch():
    events = make_events(12, seed=12, now=NOW)
    events[2]["amount_minor"] = "12.50"
    events[9]["loyalty_tier"] = "gold"
    events[10]["amount_minor"] = "13.00"
    whole = raw_table(events)
    with pytest.raises(SchemaMismatchError) as expected:
        standardize(whole, FIELDS, NOW)
    taken = []
    with pytest.raises(SchemaMismatchError) as error:
        for result in standardize_chunks([whole.slice(0, 4), whole.slice(4, 4), whole.slice(8)], FIELDS, NOW):
            taken.append(result)
    assert error.value.problems == expected.value.problems
    assert error.value.examples == expected.value.examples
    assert taken == [], "nothing is yielded once a chunk does not fit"
