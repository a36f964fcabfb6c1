"""Snapshot expiry and re-runs (issue 18): no decision reads history, so maintenance changes none.

Several batches go through the pipeline; `wap-pipeline maintain --older-than 0s` expires every snapshot
it may, removes the published audit branches and deletes orphan files; then `wap-pipeline rerun` of
every old batch must change no table, and every row is still readable.
"""

import json
import os
import time
from pathlib import Path

import pytest

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.operations.maintenance import LAYERS
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import send, tables

pytestmark = pytest.mark.integration


def _heads(stack) -> dict[str, int]:
    return {layer: table.current_snapshot().snapshot_id for layer, table in tables(stack).items()}


def _rows(stack) -> dict[str, int]:
    return {layer: table.scan().to_arrow().num_rows for layer, table in tables(stack).items()}


def _age_every_file(root: Path, seconds: float) -> int:
    """Make every file of the warehouse look ``seconds`` old (past the orphan safety margin)."""
    then = time.time() - seconds
    count = 0
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))
            count += 1
    return count


def test_expire_everything_but_the_head_then_rerun_every_old_batch_changes_no_table(stack):
    for wave in range(3):  # one batch per wave: each `run --until-idle` lands and processes it
        send(stack, make_events(40, seed=wave))
        drive()
    batches = wap.published_batches(tables(stack)["standardized"])
    assert len(batches) >= 3
    assert all(wap.is_published(tables(stack)[layer], b) for layer in LAYERS for b in batches)
    rows, before = _rows(stack), _heads(stack)

    report = json.loads(run_cli("maintain", "--older-than", "0s", "--json", "--reason", "test").stdout)
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["raw.events"]["snapshots_expired"] >= len(batches) - 1
    assert by_table["standardized.events"]["branches_removed"] == [wap.branch_name(b) for b in batches]
    assert _heads(stack) == before, "maintenance moves no head"
    for layer, table in tables(stack).items():
        table.refresh()
        kept = {s.snapshot_id for s in table.metadata.snapshots}
        assert kept == {table.current_snapshot().snapshot_id} | {wap.ledger_snapshot(table).snapshot_id}, (
            f"{layer}: only the head (and the newest commit carrying the ledger) is left"
        )
        assert all(wap.is_published(table, b) for b in batches), f"{layer}: a decision changed"

    run_cli("rerun", *[arg for b in batches for arg in ("--partition", b)], "--reason", "test")
    assert _heads(stack) == before, "a re-run of a published batch commits nothing"
    assert _rows(stack) == rows
    run_cli("status", "--check")

    # The files only expired snapshots named are orphans now; once past the safety margin they go,
    # and every table still reads every row.
    assert _age_every_file(Path(stack.state_dir), 2 * 3600) > 0
    report = json.loads(run_cli("maintain", "--older-than", "0s", "--json").stdout)
    assert sum(t["orphan_files_deleted"] for t in report["tables"]) > 0
    assert _rows(stack) == rows and _heads(stack) == before
    again = json.loads(run_cli("maintain", "--older-than", "0s", "--json").stdout)
    assert sum(t["orphan_files_deleted"] + t["snapshots_expired"] for t in again["tables"]) == 0


def test_maintenance_keeps_the_commits_a_later_layer_still_needs(stack):
    """A batch that failed its audit sits in raw, not in standardized: raw's commit of it (its
    bookmark and landing time, the audit's reference) survives any expiry until the batch is through."""
    send(stack, make_events(30, seed=7))
    drive()
    events = make_events(20, seed=8)
    events[3]["idempotency_key"] = None
    send(stack, events)
    assert drive().failed
    raw = tables(stack)["raw"]
    failed = [b for b in wap.published_batches(raw) if not wap.is_published(tables(stack)["standardized"], b)]
    assert len(failed) == 1

    report = json.loads(run_cli("maintain", "--older-than", "0s", "--json").stdout)
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["raw.events"]["held_by"] == failed[0]
    assert wap.published_snapshot(raw.refresh(), failed[0]) is not None, "raw's commit of the batch is kept"
    assert wap.branch_name(failed[0]) in tables(stack)["standardized"].metadata.refs, "abandoned: kept"

    # The runbook's loop then gets the batch through, judged as it was before the expiry.
    listed = json.loads(patcher("failures", "--json", check=False).stdout)["batches"]
    assert [b["batch_id"] for b in listed] == failed
    for record in listed[0]["records"]:
        patcher("quarantine", "add", record["quarantine_id"], "--reason", "no idempotency key")
    patcher("resume-pipeline", "--pipeline", "standard_ingest", "--reason", "quarantined")
    assert all(wap.is_published(tables(stack)[layer], failed[0]) for layer in LAYERS)
    assert tables(stack)["curated"].scan().to_arrow().num_rows == 30 + 19
    run_cli("status", "--check")
    report = json.loads(run_cli("maintain", "--older-than", "0s", "--json").stdout)
    assert all(t["held_by"] is None for t in report["tables"])
