"""Curated over the wire: checks with metadata, daily totals, replays, and a failing check that blocks."""

import json
from datetime import datetime

import orjson
import pyarrow as pa
import pytest
from dagster import DagsterInstance

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.rules.curated import daily_totals
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import (
    breaker_state,
    check_evaluations,
    curated_key_counts,
    send,
    tables,
)

pytestmark = pytest.mark.integration


def batch_ids() -> list[str]:
    with DagsterInstance.get() as instance:
        return sorted(instance.get_dynamic_partitions("landing_batches"))


def totals_as_dict(table: pa.Table) -> dict:
    return {
        (r["event_date"], r["event_type"], r["currency"]): (r["events"], r["amount_minor"])
        for r in table.to_pylist()
    }


def test_checks_pass_with_metadata_and_daily_totals_match_curated(stack):
    first, second = make_events(30, seed=51), make_events(20, seed=52)
    send(stack, first)
    drive()
    send(stack, second + first[:5])  # five SQS-style duplicates of already curated events
    drive()
    older, newer = batch_ids()

    accounting = {e.partition: e for e in check_evaluations(["curated", "events"], "row_accounting")}
    assert accounting[older].passed and accounting[newer].passed
    metadata = {k: v.value for k, v in accounting[newer].metadata.items()}
    assert metadata["standardized_rows"] == 25
    assert (metadata["inserted"], metadata["superseded"], metadata["skipped_duplicates"]) == (20, 0, 5)
    assert metadata["curated_net_new_rows"] == 20 and metadata["curated_total_rows"] == 50
    unique = {e.partition: e for e in check_evaluations(["curated", "events"], "keys_unique_in_window")}
    assert unique[newer].passed and unique[newer].metadata["rows_checked"].value == 50

    curated = tables(stack)["curated"].scan().to_arrow()
    assert curated.num_rows == 50
    expected = totals_as_dict(daily_totals(curated))
    assert totals_as_dict(tables(stack)["daily_totals"].scan().to_arrow()) == expected
    assert sum(events for events, _ in expected.values()) == 50

    freshness = check_evaluations(["curated", "events"], "standardized_batches_curated_in_time")
    assert freshness and freshness[0].passed
    assert freshness[0].metadata["pending_batches"].value == 0


def test_a_replay_supersedes_a_published_original_once_and_totals_follow(stack, tmp_path):
    events = make_events(12, seed=61)
    original = events[4]
    send(stack, events)
    drive()
    # Found wrong after publishing: quarantine it and re-inject the corrected copy as a replay.
    patcher("quarantine", "add", original["event_id"], "--reason", "amount wrong at source")
    corrected = {**original, "amount_minor": original["amount_minor"] + 1}
    fixed = tmp_path / "fixed.ndjson"
    fixed.write_bytes(orjson.dumps(corrected) + b"\n")
    patcher("replay", str(fixed), "--reason", "amount corrected")
    drive()

    counts = curated_key_counts(stack)
    assert counts[original["idempotency_key"]] == 1 and len(counts) == 12
    curated = tables(stack)["curated"].scan().to_arrow()
    row = next(r for r in curated.to_pylist() if r["idempotency_key"] == original["idempotency_key"])
    assert row["amount_minor"] == corrected["amount_minor"] and row["is_replay"] is True
    assert totals_as_dict(tables(stack)["daily_totals"].scan().to_arrow()) == totals_as_dict(
        daily_totals(curated)
    )
    replay_batch = batch_ids()[-1]
    accounting = {e.partition: e for e in check_evaluations(["curated", "events"], "row_accounting")}
    assert accounting[replay_batch].passed
    assert accounting[replay_batch].metadata["superseded"].value == 1
    assert accounting[replay_batch].metadata["curated_net_new_rows"].value == 0

    # Accounting: the quarantined original and its replay in curated count once, in curated.
    status = json.loads(run_cli("status", "--json", "--check").stdout)
    assert (status["messages_sent"], status["curated_rows"], status["quarantined"]) == (12, 12, 1)
    assert status["quarantined_replayed"] == 1 and status["accounted"] == 12
    replay_account = next(b for b in status["batches"] if b["batch_id"] == replay_batch)
    assert (replay_account["landed"], replay_account["published"], replay_account["superseded"]) == (1, 1, 1)
    assert all(b["identity_holds"] and b["state"] == "curated" for b in status["batches"])


def test_a_duplicate_in_curated_fails_the_check_trips_the_breaker_and_blocks_totals(stack):
    events = make_events(10, seed=71)
    send(stack, events[:5])
    drive()
    # Another writer (not this pipeline) slips a second copy of a curated key into the table.
    curated = tables(stack)["curated"]
    rogue = curated.scan().to_arrow().slice(0, 1)
    curated.append(rogue)
    send(stack, events[5:])
    assert drive().failed, "the batch's run failed"

    batch = batch_ids()[-1]
    unique = {e.partition: e for e in check_evaluations(["curated", "events"], "keys_unique_in_window")}
    assert not unique[batch].passed
    assert unique[batch].metadata["duplicate_keys"].value == 1
    assert rogue["idempotency_key"][0].as_py() in unique[batch].metadata["sample_duplicates"].value
    state = breaker_state(stack)
    assert state.status == "RED" and "keys_unique_in_window" in state.reason and state.batch_id == batch
    totals = tables(stack)["daily_totals"]
    assert batch not in wap.published_batches(totals), "the blocking check kept totals from publishing"
    first_days = {datetime.fromisoformat(e["event_timestamp"]).date() for e in events[:5]}
    assert first_days <= {r["event_date"] for r in totals.scan().to_arrow().to_pylist()}
