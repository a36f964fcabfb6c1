"""Fixing DLQ bodies (rules/dlq_fixes.py): patch by rule, the auto-fix policy, and one judge for all."""

from datetime import UTC, datetime

import orjson
import pytest

from wap_pipeline.events import make_events
from wap_pipeline.iceberg.schemas import STANDARDIZED_SCHEMA, payload_fields
from wap_pipeline.ingest.dlq import DlqMessage, from_event_record
from wap_pipeline.rules.dlq_fixes import (
    FIXED,
    INVALID,
    UNCHANGED_BODY,
    autofix_message,
    check_fix,
    parse_policy,
    patch_message,
    remove_controls_outside_strings,
    strip_bom,
)
from wap_pipeline.rules.envelope import PayloadLimits

FIELDS = payload_fields(STANDARDIZED_SCHEMA)
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
"""When the replay lands: the audit's reference time."""
EVENT = make_events(1, seed=21, now=NOW)[0]
GOOD = orjson.dumps(EVENT).decode()


def message(body: str, attributes: dict | None = None) -> DlqMessage:
    return DlqMessage("m-1", "m-0", body, 3, None, attributes or {}, "handle")


def test_patch_removes_characters_as_secure_clean_does_and_keeps_the_ids():
    body = GOOD.replace('"currency":"', '"currency":"\x1f', 1).replace(",", ",\x1f", 1)
    fix = patch_message(message(body), {"\x1f"}, FIELDS, NOW)
    assert fix.status == FIXED and orjson.loads(fix.body) == EVENT
    assert fix.attributes == {
        "is_replay": "true",
        "original_message_id": "m-0",
        "idempotency_key": EVENT["idempotency_key"],
    }
    replay = fix.as_replay(1)
    assert replay.ids.message_id == "m-1" and replay.original_quarantine_id == EVENT["event_id"]


def test_a_truncated_body_stays_with_the_parsers_reason():
    fix = patch_message(message(GOOD[:40] + "\x1f"), {"\x1f"}, FIELDS, NOW)
    assert fix.status == INVALID and "not a JSON object" in fix.reasons[0]
    untouched = patch_message(message(GOOD[:40]), {"\x1f"}, FIELDS, NOW)
    assert untouched.status == UNCHANGED_BODY
    assert "none of the characters" in untouched.reasons[0] and "invalid JSON" in untouched.reasons[0]


def test_a_body_the_audit_would_flag_is_not_fixed():
    broken = {**EVENT, "idempotency_key": None}
    body = orjson.dumps(broken).decode().replace("{", "{\x1f", 1)
    fix = patch_message(message(body), {"\x1f"}, FIELDS, NOW)
    assert fix.status == INVALID and "standardized audit" in fix.reasons[0]


def test_a_character_removed_from_a_key_is_refused_as_secure_clean_refuses_it():
    key = EVENT["idempotency_key"]
    raw = GOOD.replace(key, key[:4] + "\t" + key[4:]).replace('":"', '":"\t', 1)  # does not parse
    fix = patch_message(message(raw), {"\t"}, FIELDS, NOW)
    assert fix.status == INVALID and "idempotency_key" in fix.reasons[0] and "dlq edit" in fix.reasons[0]
    escaped = orjson.dumps({**EVENT, "event_id": EVENT["event_id"] + "\x1f"}).decode()  # parses
    fix = patch_message(message(escaped), {"\x1f"}, FIELDS, NOW)
    assert fix.status == INVALID and "event_id" in fix.reasons[0]


def test_the_forwarders_limits_apply():
    fix = check_fix(message("x"), GOOD, "edit", FIELDS, NOW, PayloadLimits(max_bytes=10))
    assert fix.status == INVALID and "forwarder would reject" in fix.reasons[0]


def test_an_edit_that_does_not_parse_says_where():
    fix = check_fix(message("x"), GOOD.replace(",", ",,", 1), "edit", FIELDS, NOW)
    assert fix.status == INVALID and "line 1 column" in fix.reasons[0]


def test_an_existing_idempotency_key_attribute_is_kept():
    fix = check_fix(message("x", {"idempotency_key": "k-1"}), GOOD, "edit", FIELDS, NOW)
    assert fix.attributes["idempotency_key"] == "k-1"


def test_autofix_only_touches_framing():
    assert strip_bom("\ufeff\ufeff{}") == "{}"
    framed = '{"a":\x00 "b\\"\x85",\x7f\x85"c":\t1}\n'
    assert remove_controls_outside_strings(framed) == '{"a": "b\\"\x85","c":\t1}\n'
    fixed = autofix_message(
        message("\ufeff" + GOOD.replace(",", ",\x85", 1)),
        parse_policy("strip_bom,remove_controls_outside_strings"),
        FIELDS,
        NOW,
    )
    assert fixed.status == FIXED and fixed.how == "autofix:strip_bom,remove_controls_outside_strings"
    inside = autofix_message(
        message(GOOD.replace('":"', '":"\x1f', 1)), ("remove_controls_outside_strings",), FIELDS, NOW
    )
    assert inside.status == UNCHANGED_BODY, "a control character inside a string is a person's call"


def test_the_policy_is_allow_listed():
    with pytest.raises(ValueError, match="unknown auto-fix"):
        parse_policy("strip_bom,rewrite_everything")
    with pytest.raises(ValueError):
        parse_policy(" , ")


def test_a_lambda_sqs_record_reads_as_a_dlq_message():
    record = {
        "messageId": "m-1",
        "receiptHandle": "h",
        "body": GOOD,
        "attributes": {"ApproximateReceiveCount": "4", "SentTimestamp": "1000"},
        "messageAttributes": {"original_message_id": {"stringValue": "m-0", "dataType": "String"}},
    }
    parsed = from_event_record(record)
    assert (parsed.message_id, parsed.original_message_id, parsed.receive_count) == ("m-1", "m-0", 4)
