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


def test_every_action_records_its_intent_first_and_its_outcome_after(stack):
    from wap_pipeline_tests.integration.cli import run_cli

    patcher("quarantine", "add", "evt_9", "--reason", "bad key")
    run_cli("schema", "add-column", "loyalty_tier", "string", "--reason", "new producer field")
    run_cli("branches", "cleanup", "--reason", "weekly")
    assert run_cli("redrive", "--no-then-run", "--reason", "nothing failed").returncode == 0
    stored = json.loads(patcher("--json", "audit-log", "--every-phase").stdout)
    assert [(e["action"], e["phase"]) for e in stored] == [
        (action, phase)
        for action in ("quarantine.add", "schema.add-column", "branches.cleanup", "pipeline.redrive")
        for phase in ("intent", "done")
    ]
    for intent, outcome in zip(stored[::2], stored[1::2], strict=True):
        assert outcome["intent_id"] == intent["entry_id"] and outcome["at"] >= intent["at"]
    assert stored[3]["details"]["added_to"] == ["standardized", "curated"]

    # A failed action: its outcome says how; an action whose process died shows as a bare intent.
    from wap_pipeline.operations.actions import Operator

    operator = Operator(stack, "support-bob")
    with pytest.raises(RuntimeError), operator.acting("dlq.purge", stack.dlq_name, "cleanup"):
        raise RuntimeError("SQS unreachable")
    operator.audit.record("support-bob", "breaker.reset", stack.pipeline_name, "died", phase="intent")
    shown = json.loads(patcher("--json", "audit-log").stdout)
    assert [(e["action"], e["phase"]) for e in shown[-2:]] == [
        ("dlq.purge", "failed"),
        ("breaker.reset", "intent"),
    ]
    assert "SQS unreachable" in shown[-2]["details"]["error"]
    assert json.loads(run_cli("status", "--json").stdout)["dlq_purged"] == 0, "a failed purge purged nothing"
