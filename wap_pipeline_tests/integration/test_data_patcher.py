"""data-patcher verbs end to end against the local server."""

import json

import pytest

from wap_pipeline_tests.integration.cli import patcher
from wap_pipeline_tests.integration.helpers import breaker_state, quarantine

pytestmark = pytest.mark.integration


def test_quarantine_verbs_are_recorded_in_the_audit_log(stack):
    assert "quarantined evt_1" in patcher("quarantine", "add", "evt_1", "--reason", "null key").stdout
    patcher("quarantine", "add", "evt_2", "--reason", "bad timestamp")
    listed = json.loads(patcher("--json", "quarantine", "list").stdout)
    assert {e["record_id"]: e["added_by"] for e in listed} == {"evt_1": "support-bob", "evt_2": "support-bob"}
    assert "removed" in patcher("quarantine", "remove", "evt_2", "--reason", "fixed upstream").stdout
    assert quarantine(stack).ids() == frozenset({"evt_1"})
    assert patcher("quarantine", "add", "evt_3", check=False).returncode == 2, "a reason is required"

    log = json.loads(patcher("--json", "audit-log").stdout)
    assert [(e["action"], e["target"], e["operator"], e["reason"]) for e in log] == [
        ("quarantine.add", "evt_1", "support-bob", "null key"),
        ("quarantine.add", "evt_2", "support-bob", "bad timestamp"),
        ("quarantine.remove", "evt_2", "support-bob", "fixed upstream"),
    ]


def test_resume_pipeline_refuses_an_unknown_pipeline_and_dry_run_changes_nothing(stack):
    from wap_pipeline import aws
    from wap_pipeline.resources.breaker import CircuitBreaker

    CircuitBreaker(aws.client("dynamodb", stack), stack.breaker_table, stack.pipeline_name).trip("boom")
    refused = patcher("resume-pipeline", "--pipeline", "nightly_export", check=False)
    assert refused.returncode == 3 and "unknown pipeline" in refused.stderr
    dry = json.loads(
        patcher("--json", "resume-pipeline", "--pipeline", "standard_ingest", "--dry-run").stdout
    )
    assert dry == {"breaker": "RED", "would_reset": True, "would_redrive": [], "path": "headless"}
    assert breaker_state(stack).status == "RED"
    assert json.loads(patcher("--json", "audit-log").stdout) == []

    resumed = patcher("resume-pipeline", "--pipeline", "standard_ingest", "--reason", "false alarm")
    assert "Circuit Breaker Reset (Status=GREEN)" in resumed.stdout
    assert breaker_state(stack).reset_by == "support-bob"
    (entry,) = json.loads(patcher("--json", "audit-log").stdout)
    assert (entry["action"], entry["reason"], entry["details"]["was"]) == (
        "breaker.reset",
        "false alarm",
        "RED",
    )
