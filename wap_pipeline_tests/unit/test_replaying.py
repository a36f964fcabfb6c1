"""`data-patcher replay`'s judge: which hand-fixed records it sends, with which attributes, and why not."""

from datetime import UTC, datetime

import orjson

from wap_pipeline.events import make_events
from wap_pipeline.iceberg.schemas import STANDARDIZED_SCHEMA, payload_fields
from wap_pipeline.operations.replaying import judge_fixed_record
from wap_pipeline.rules.cleaning import CLEANED, INVALID

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
FIELDS = payload_fields(STANDARDIZED_SCHEMA)


def test_a_valid_fix_of_a_quarantined_record_is_sent_as_a_replay():
    event = make_events(1, seed=3, now=NOW)[0]
    judged = judge_fixed_record(4, orjson.dumps(event), {event["event_id"]}, FIELDS, NOW)
    assert (judged.line, judged.status, judged.reasons) == (4, CLEANED, [])
    assert judged.attributes == {"is_replay": "true", "idempotency_key": event["idempotency_key"]}
    assert judged.body == orjson.dumps(event).decode() and judged.original_quarantine_id == event["event_id"]


def test_a_fix_is_refused_when_it_replaces_nothing_quarantined_or_would_fail():
    event = make_events(1, seed=4, now=NOW)[0]
    quarantined = {event["event_id"]}
    not_quarantined = judge_fixed_record(1, orjson.dumps(event), set(), FIELDS, NOW)
    assert not_quarantined.status == INVALID and "is not quarantined" in not_quarantined.reasons[0]
    still_bad = judge_fixed_record(1, orjson.dumps({**event, "currency": "eur"}), quarantined, FIELDS, NOW)
    assert still_bad.status == INVALID and "currency_invalid" in still_bad.reasons[0]
    no_id = judge_fixed_record(1, orjson.dumps({**event, "event_id": None}), quarantined, FIELDS, NOW)
    assert no_id.reasons == ["no usable event_id: a replay must name the quarantined record it replaces"]
    assert judge_fixed_record(1, b"[1]", quarantined, FIELDS, NOW).reasons == ["not a JSON object"]
    assert judge_fixed_record(1, b"\xff", quarantined, FIELDS, NOW).status == INVALID
