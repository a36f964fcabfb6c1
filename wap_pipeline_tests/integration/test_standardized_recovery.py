"""FMEA 2.1 (schema mismatch) and 2.2 (CDE violation): detect, stop, recover with documented commands."""

import json

import orjson
import pytest
from dagster import DagsterInstance

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import breaker_state, curated_key_counts, send, tables

pytestmark = pytest.mark.integration


def batch_ids() -> list[str]:
    with DagsterInstance.get() as instance:
        return sorted(instance.get_dynamic_partitions("landing_batches"))


def test_schema_mismatch_then_evolve_reset_and_redrive_publishes_the_same_files_once(stack):
    first = make_events(20, seed=21)
    first[3]["loyalty_tier"] = "gold"  # a field the schema does not have
    send(stack, first)
    assert drive().failed
    (batch,) = batch_ids()
    state = breaker_state(stack)
    assert state.status == "RED" and state.batch_id == batch and "loyalty_tier" in state.reason
    standardized = tables(stack)["standardized"]
    assert wap.bookmark(standardized) is None
    assert wap.branches_of_batch(standardized, batch) == [], "a schema mismatch stops before any write"

    # A later batch is blocked while the breaker is RED.
    later = make_events(10, seed=22)
    send(stack, later)
    assert drive().failed
    assert len(batch_ids()) == 2

    run_cli("schema", "add-column", "loyalty_tier", "string")
    run_cli("breaker", "reset", "--reason", "added loyalty_tier to the schema")
    run_cli("redrive")

    state = breaker_state(stack)
    assert state.status == "GREEN" and state.reset_reason == "added loyalty_tier to the schema"
    standardized = tables(stack)["standardized"]
    assert wap.published_batches(standardized) == batch_ids()
    assert wap.bookmark(standardized)["batch_id"] == batch_ids()[-1]
    rows = wap.scan_batch(standardized, wap.MAIN, batch).to_pylist()
    assert len(rows) == 20
    assert [r["loyalty_tier"] for r in rows if r["loyalty_tier"]] == ["gold"]
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in first + later} and max(counts.values()) == 1
    assert tables(stack)["raw"].scan().to_arrow().num_rows == 30, "the same files, read again, not re-landed"


def test_cde_violation_quarantine_reset_rerun_then_replay_is_published(stack, tmp_path):
    events = make_events(25, seed=31)
    bad = events[10]
    fixed = dict(bad)
    bad["idempotency_key"] = None
    send(stack, events)
    assert drive().failed
    (batch,) = batch_ids()
    assert breaker_state(stack).status == "RED"
    result = run_cli("status", "--json", check=False)
    assert result.stdout, result.stderr[-3000:]
    failed = json.loads(result.stdout)
    (account,) = failed["batches"]
    assert (account["state"], account["landed"], account["invalid"], account["published"]) == (
        "failed audit",
        25,
        1,
        None,
    )
    assert failed["invalid_rows"] == 1 and failed["identity_holds"] is False
    assert run_cli("status", "--check", check=False).returncode == 2

    patcher("quarantine", "add", bad["event_id"], "--reason", "null idempotency_key, fixed copy to follow")
    patcher("resume-pipeline", "--pipeline", "standard_ingest", "--reason", "bad record quarantined")

    standardized = tables(stack)["standardized"]
    assert wap.published_batches(standardized) == [batch]
    assert wap.branches_of_batch(standardized, batch) == [wap.branch_name(batch), wap.branch_name(batch, 1)]
    published = wap.scan_batch(standardized, wap.MAIN, batch)
    assert published.num_rows == 24
    assert bad["event_id"] not in published["event_id"].to_pylist()
    # The abandoned first branch is intact and was never published.
    assert wap.scan_batch(standardized, wap.branch_name(batch), batch).num_rows == 25
    listed = run_cli("branches", "list").stdout
    assert f"{wap.branch_name(batch)}\tabandoned until" in listed
    assert f"{wap.branch_name(batch, 1)}\tpublished" in listed
    assert "removed 0 branch(es)" in run_cli("branches", "cleanup").stdout, "retention has not passed"

    # Re-inject the fixed record as data-patcher's replay: it bypasses the quarantine in a later batch.
    fixed_file = tmp_path / "fixed.ndjson"
    fixed_file.write_bytes(orjson.dumps(fixed) + b"\n")
    replayed = json.loads(patcher("--json", "replay", str(fixed_file), "--reason", "key restored").stdout)
    (new_message_id,) = [r["new_message_id"] for r in replayed["records"]]
    drive()
    counts = curated_key_counts(stack)
    assert counts[fixed["idempotency_key"]] == 1
    assert set(counts) == {e["idempotency_key"] for e in events if e["idempotency_key"]} | {
        fixed["idempotency_key"]
    }
    assert max(counts.values()) == 1
    replay_rows = tables(stack)["curated"].scan().to_arrow().to_pylist()
    replay = next(r for r in replay_rows if r["event_id"] == fixed["event_id"])
    assert replay["is_replay"] is True and replay["original_message_id"] == new_message_id
    assert breaker_state(stack).status == "GREEN"
    status = json.loads(run_cli("status", "--json", "--check").stdout)
    first, second = status["batches"]
    assert (first["landed"], first["quarantined"], first["published"], first["inserted"]) == (25, 1, 24, 24)
    assert (second["landed"], second["quarantined"], second["published"], second["inserted"]) == (1, 0, 1, 1)
    assert status["masked_rows"] == 1 and status["quarantined_replayed"] == 1
