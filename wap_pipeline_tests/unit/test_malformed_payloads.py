import pytest

from wap_pipeline.rules.envelope import parse_body
from wap_pipeline_tests.malformed import MALFORMED


def test_the_table_has_at_least_thirty_kinds():
    assert len(MALFORMED) >= 30


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_kind_is_rejected_with_a_precise_reason(kind):
    reason = parse_body(MALFORMED[kind])
    assert isinstance(reason, str), f"{kind} was accepted"
    assert reason.startswith(("invalid JSON", "JSON ", "payload of")), reason


def test_limits_are_inclusive_and_business_rule_breaks_are_not_malformed():
    assert isinstance(parse_body('{"a":' * 32 + "1" + "}" * 32), dict)
    assert parse_body('{"a":' * 33 + "1" + "}" * 33) == "JSON nested deeper than 32 levels"
    assert parse_body("{}") == {}, "an empty object is well-formed; the audit rejects it"
    assert parse_body('{"idempotency_key": null, "amount_minor": "12"}') == {
        "idempotency_key": None,
        "amount_minor": "12",
    }
