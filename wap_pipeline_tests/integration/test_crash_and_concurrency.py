"""Crashes at every WAP boundary and a concurrent writer: exactly one copy, nothing lost.

Faults are injected by configuration (WAP_FAULTS, armed by the tests' hooks plugin) into the real
`wap-pipeline` process.
"""

import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import lease, wap
from wap_pipeline_tests.integration.cli import run_cli, start_cli
from wap_pipeline_tests.integration.helpers import (
    breaker_state,
    check_evaluations,
    curated_key_counts,
    send,
    tables,
)

pytestmark = pytest.mark.integration


def the_batch() -> str:
    with DagsterInstance.get() as instance:
        (batch,) = instance.get_dynamic_partitions("landing_batches")
    return batch


def assert_exactly_once(stack, events: list[dict], batch: str) -> None:
    standardized = tables(stack)["standardized"]
    assert wap.published_batches(standardized) == [batch]
    assert wap.scan_batch(standardized, wap.MAIN, batch).num_rows == len(events)
    assert wap.bookmark(standardized)["batch_id"] == batch
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events}
    assert max(counts.values()) == 1
    assert wap.published_batches(tables(stack)["curated"]) == [batch]


@pytest.mark.parametrize(
    ("point", "published_before_crash", "seed"),
    [  # a fixed seed per case: a failure replays with the same data
        ("raw.after_append", False, 501),
        ("standardized.after_branch_write", False, 502),
        ("standardized.after_audit", False, 503),
        ("standardized.after_publish", True, 504),
        ("curated.before_commit", True, 505),
    ],
)
def test_kill_at_a_boundary_then_redrive_gives_exactly_one_copy(
    stack, monkeypatch, point, published_before_crash, seed
):
    events = make_events(15, seed=seed)
    send(stack, events)
    monkeypatch.setenv("WAP_FAULTS", f"{point}=kill")
    crashed = run_cli("run", "--until-idle", check=False)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    monkeypatch.delenv("WAP_FAULTS")
    batch = the_batch()

    standardized = tables(stack)["standardized"]
    assert (wap.published_snapshot(standardized, batch) is not None) == published_before_crash
    if not published_before_crash:
        assert wap.bookmark(standardized) is None, "a crash before publish leaves the bookmark alone"
    assert wap.published_snapshot(tables(stack)["curated"], batch) is None, "curated commits all or nothing"

    redriven = run_cli("redrive")
    assert "its process died; marked FAILED" in redriven.stdout
    assert_exactly_once(stack, events, batch)
    assert tables(stack)["raw"].scan().to_arrow().num_rows == len(events)
    # Re-running an already published batch is a no-op.
    run_cli("redrive", "--partition", batch)
    assert_exactly_once(stack, events, batch)


def test_failure_inside_the_curated_commit_commits_nothing(stack, monkeypatch):
    events = make_events(12, seed=77)
    send(stack, events)
    monkeypatch.setenv("WAP_FAULTS", "curated.before_commit=raise*")  # every attempt fails
    failed = run_cli("run", "--until-idle", check=False)
    assert failed.returncode == 1
    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs(RunsFilter(job_name="standard_ingest"))
        retries = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 5, "every attempt is retried before the breaker trips"
    monkeypatch.delenv("WAP_FAULTS")
    batch = the_batch()
    curated = tables(stack)["curated"]
    assert curated.current_snapshot() is None or curated.scan().to_arrow().num_rows == 0
    assert breaker_state(stack).status == "RED"
    run_cli("breaker", "reset", "--reason", "transient S3 error")
    run_cli("redrive")
    assert_exactly_once(stack, events, batch)


def _concurrent_publish(stack, monkeypatch, tmp_path: Path) -> None:
    events = make_events(18, seed=88)
    send(stack, events)
    release = tmp_path / f"release-{uuid.uuid4().hex}"
    process = start_cli(
        "run", "--until-idle", env={"WAP_FAULTS": f"standardized.after_audit=pause:{release}"}
    )
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{release}.reached").exists():
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the publish point"
            time.sleep(0.1)
        # Another writer commits to main between our audit and our publish.
        other = tables(stack)["standardized"]
        other.append(other.schema().as_arrow().empty_table(), snapshot_properties={"test.other-writer": "1"})
        moved_to = other.current_snapshot().snapshot_id
        release.touch()
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]

    batch = the_batch()
    standardized = tables(stack)["standardized"]
    ancestry = {s.snapshot_id for s in wap.history(standardized.metadata, standardized.current_snapshot())}
    assert moved_to in ancestry, "the other writer's commit was kept"
    assert wap.branches_of_batch(standardized, batch) == [wap.branch_name(batch), wap.branch_name(batch, 1)]
    first = standardized.metadata.refs[wap.branch_name(batch)].snapshot_id
    assert first not in ancestry, "the refused branch is not an ancestor of main"
    assert_exactly_once(stack, events, batch)
    assert breaker_state(stack).status == "GREEN"


def test_main_moved_between_write_and_publish_sqlite(stack, monkeypatch, tmp_path):
    _concurrent_publish(stack, monkeypatch, tmp_path)


@pytest.mark.postgres
def test_main_moved_between_write_and_publish_postgresql(stack, monkeypatch, tmp_path, postgres_catalog):
    _concurrent_publish(stack, monkeypatch, tmp_path)


def test_a_batch_published_just_before_a_crash_keeps_its_passed_audit(stack, monkeypatch):
    """Found by the chaos suite (seed 38): killed right after the fast-forward, the batch was
    published but its audit evaluation had never been recorded -- the re-run only said "already
    published". The passed audit is now recorded before main moves."""
    events = make_events(10, seed=38)
    send(stack, events)
    monkeypatch.setenv("WAP_FAULTS", "standardized.after_publish=kill")
    assert run_cli("run", "--until-idle", check=False).returncode == -9
    monkeypatch.delenv("WAP_FAULTS")
    run_cli("redrive")
    batch = the_batch()
    standardized = tables(stack)["standardized"]
    published = wap.published_snapshot(standardized, batch)
    (branch,) = [
        b
        for b in wap.branches_of_batch(standardized, batch)
        if standardized.metadata.refs[b].snapshot_id == published.snapshot_id
    ]
    audits = [
        e
        for e in check_evaluations(["standardized", "events"], "audit")
        if getattr(e, "partition", None) == batch and getattr(e, "passed", False)
    ]
    assert any(e.metadata.get("branch") and e.metadata["branch"].value == branch for e in audits), audits
    assert_exactly_once(stack, events, batch)


def test_two_runners_at_once_never_commit_to_one_table_at_the_same_time(stack):
    """Two `wap-pipeline run --until-idle` started together over the same batches: each table's writer
    lease admits one of them at a time (every commit carries its lease token, and a table's tokens never
    go back), and every batch lands once."""
    events = [e for seed in (601, 602, 603) for e in make_events(12, seed=seed)]
    for wave in range(3):
        send(stack, events[wave * 12 : (wave + 1) * 12])
    runners = [start_cli("run", "--until-idle") for _ in range(2)]
    outputs = [runner.communicate(timeout=600)[0] for runner in runners]
    assert [r.returncode for r in runners] == [0, 0], [o[-2000:] for o in outputs]

    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    with DagsterInstance.get() as instance:
        batches = instance.get_dynamic_partitions("landing_batches")
    for name, table in tables(stack).items():
        if name == "daily_totals":
            continue
        assert sorted(wap.published_batches(table)) == sorted(batches), name
        snapshots = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number)
        tokens = [int(s.summary[lease.WRITER_TOKEN_PROPERTY]) for s in snapshots]
        assert tokens == sorted(tokens), f"{name}: commits of two lease holders interleaved: {tokens}"
