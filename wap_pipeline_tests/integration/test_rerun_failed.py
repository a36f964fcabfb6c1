"""FMEA 3.1 against a real webserver: a batch failing in curated is re-executed from failure over
GraphQL by `wap-pipeline rerun-failed`; only curated runs again; the other batches are not touched."""

import time

import pytest
from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.jobs import PIPELINE_JOB
from wap_pipeline.partitions import landing_batches
from wap_pipeline.rules.curated import daily_totals
from wap_pipeline.runner import PARTITION_TAG
from wap_pipeline.state import ensure_dagster_home
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.dagster_dev import dagster_dev
from wap_pipeline_tests.integration.helpers import (
    breaker_state,
    curated_key_counts,
    latest_partition_runs,
    send,
    tables,
)

pytestmark = pytest.mark.integration


def started_steps(run_id: str) -> set[str]:
    with DagsterInstance.get() as instance:
        records = instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.STEP_START), limit=1000
        )
    return {r.event_log_entry.step_key for r in records if r.event_log_entry.run_id == run_id}


def test_rerun_failed_reexecutes_only_curated_of_the_failed_batch_through_the_webserver(stack, tmp_path):
    sent = []
    for seed in (1, 2, 3):
        events = make_events(8, seed=80 + seed)
        sent += events
        send(stack, events)
        faults = {"WAP_FAULTS": "curated.before_commit=raise*"} if seed == 3 else {}
        result = run_cli("run", "--until-idle", check=False, env=faults)
        assert result.returncode == (1 if seed == 3 else 0), result.stderr[-2000:]
    runs = latest_partition_runs()
    first, second, failed_batch = sorted(runs)
    assert [len(runs[k]) for k in (first, second, failed_batch)] == [1, 1, 1]
    failed_run = runs[failed_batch][0]
    assert failed_run.status.value == "FAILURE"
    curated = tables(stack)["curated"]
    assert wap.batch_snapshots(curated, failed_batch) == [], "the failed curated step committed nothing"
    assert wap.published_snapshot(tables(stack)["standardized"], failed_batch) is not None
    assert breaker_state(stack).status == "RED"

    with dagster_dev(tmp_path / "dagster-dev.log") as url:
        refused = run_cli("rerun-failed", "--url", url, check=False)
        assert refused.returncode == 3 and "breaker" in refused.stderr and "RED" in refused.stderr
        run_cli("breaker", "reset", "--reason", "curated store recovered")
        nothing = run_cli("rerun-failed", "--url", url, "--partition", first)
        assert "no failed batches to re-execute" in nothing.stdout
        rerun = run_cli("rerun-failed", "--url", url)
        assert f"{failed_batch}: re-executing failed run {failed_run.run_id} from failure" in rerun.stdout
        assert "SUCCESS" in rerun.stdout

        # data-patcher resume-pipeline takes the same GraphQL path when a webserver answers.
        cde = make_events(6, seed=90)
        cde[2]["idempotency_key"] = None
        send(stack, cde)
        # `dagster dev` runs the daemon too: its sensors may take the batch before the headless runner
        # does. Either way the batch fails its audit and trips the breaker; wait for that run to end.
        run_cli("run", "--until-idle", check=False)
        _wait_for_failed_run_of_a_new_batch(known={first, second, failed_batch})
        assert breaker_state(stack).status == "RED"
        patcher("quarantine", "add", cde[2]["event_id"], "--reason", "null idempotency_key")
        resumed = patcher(
            "resume-pipeline", "--pipeline", "standard_ingest", "--reason", "quarantined", "--url", url
        )
        assert f"({'webserver ' + url})" in resumed.stdout and "from failure -> run" in resumed.stdout
        sent += [e for e in cde if e["idempotency_key"]]

    runs = latest_partition_runs()
    assert [len(runs[k]) for k in (first, second)] == [1, 1], "the other batches were not re-run"
    assert breaker_state(stack).status == "GREEN"
    child, parent = runs[failed_batch]
    assert child.parent_run_id == parent.run_id and child.status.value == "SUCCESS"
    steps = started_steps(child.run_id)
    assert "curated__events" in steps and "curated__daily_totals" in steps
    assert not steps & {"raw__events", "standardized__events"}, f"only curated re-ran, not {steps}"

    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in sent} and max(counts.values()) == 1
    curated_rows = tables(stack)["curated"].scan().to_arrow()
    totals = tables(stack)["daily_totals"].scan().to_arrow()
    assert sorted(totals.to_pylist(), key=str) == sorted(daily_totals(curated_rows).to_pylist(), key=str)


def _wait_for_failed_run_of_a_new_batch(known: set[str], timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = latest_partition_runs()
        if any(runs[k] and runs[k][0].status.value == "FAILURE" for k in runs if k not in known):
            return
        time.sleep(2)
    raise AssertionError(f"no run of a new batch failed within {timeout_s} s: {latest_partition_runs()}")


def test_a_batch_never_run_is_launched_through_dagsters_graphql_client(stack, tmp_path):
    """The launch (not a re-execution) goes through DagsterGraphQLClient.submit_job_execution: the
    run is the pipeline job of the right code location, tagged with the batch's partition."""
    ensure_dagster_home(stack)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(landing_batches.name, ["never-run-batch"])
    with dagster_dev(tmp_path / "dagster-dev.log") as url:
        launched = run_cli("rerun-failed", "--url", url, "--no-wait")
    assert "never-run-batch: never run; launched run " in launched.stdout, launched.stdout
    run_id = launched.stdout.split("launched run ")[1].split()[0]
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None and run.job_name == PIPELINE_JOB
    assert run.tags[PARTITION_TAG] == "never-run-batch"
