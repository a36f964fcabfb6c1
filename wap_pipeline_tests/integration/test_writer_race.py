"""Two real processes race on the same tables: never a duplicated key, every batch applied once.

Each round lands two batches that share one idempotency key, and both writers run raw ->
standardized -> curated for both, starting at the same moment. In even rounds they run the batches
in the same order: the same batch races in every layer ("already loaded / published / merged?"
answered "no" to both). In odd rounds in opposite orders: the two batches race, each planning the
shared key as new in curated, then each writer re-runs the batch the other one applied.
"""

import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.iceberg import lease, wap
from wap_pipeline.ingest.landing import LandingObject, Manifest, write_manifest
from wap_pipeline_tests.integration.cli import start_cli
from wap_pipeline_tests.integration.helpers import breaker_state, curated_key_counts, land_file, send, tables

pytestmark = pytest.mark.integration

ROUNDS = 4
ROOT = Path(__file__).resolve().parents[2]


def land_batch(stack, batch_id: str, events: list[dict]) -> None:
    key, _ = land_file(stack, [orjson.dumps(e).decode() for e in events])
    head = aws.client("s3", stack).head_object(Bucket=stack.landing_bucket, Key=key)
    landed = LandingObject(key, head["ContentLength"], head["LastModified"])
    write_manifest(
        aws.client("s3", stack), stack.landing_bucket, stack.manifests_prefix, Manifest(batch_id, (landed,))
    )


def race(stack, tmp_path: Path) -> None:
    rounds, expected = [], {}
    for number in range(ROUNDS):
        first, second = make_events(6, seed=900 + number), make_events(6, seed=950 + number)
        second[0]["idempotency_key"] = first[0]["idempotency_key"]  # planned as new by both writers
        batches = (f"race-{number}-1", f"race-{number}-2")
        for batch_id, events in zip(batches, (first, second), strict=True):
            land_batch(stack, batch_id, events)
            expected[batch_id] = events
        rounds.append(batches)
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wap_pipeline_tests.integration.race_worker",
                str(tmp_path / "barrier"),
                name,
                "2",
                *[",".join(b if name == "A" or n % 2 == 0 else b[::-1]) for n, b in enumerate(rounds)],
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("A", "B")
    ]
    outputs = [writer.communicate(timeout=900)[0] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], "\n".join(o[-4000:] for o in outputs)

    layers = tables(stack)
    raw, standardized, curated = layers["raw"], layers["standardized"], layers["curated"]
    raw_batches = Counter(raw.scan(selected_fields=("batch_id",)).to_arrow()["batch_id"].to_pylist())
    assert raw_batches == {b: len(events) for b, events in expected.items()}, "each batch loaded once"
    for batch_id, events in expected.items():
        assert wap.scan_batch(standardized, wap.MAIN, batch_id).num_rows == len(events), batch_id
    keys = Counter(
        curated.scan(selected_fields=("idempotency_key",)).to_arrow()["idempotency_key"].to_pylist()
    )
    assert [k for k, n in keys.items() if n > 1] == [], "a key is duplicated in curated"
    assert set(keys) == {e["idempotency_key"] for events in expected.values() for e in events}
    assert sorted(wap.published_batches(curated)) == sorted(expected), "every batch merged, once"
    for table in (raw, standardized, curated):
        assert all(lease.WRITER_TOKEN_PROPERTY in s.summary for s in table.metadata.snapshots), table.name()


def test_two_processes_racing_on_a_sqlite_catalog(stack, tmp_path):
    race(stack, tmp_path)


@pytest.mark.postgres
def test_two_processes_racing_on_a_postgresql_catalog(stack, tmp_path, postgres_catalog):
    race(stack, tmp_path)


def test_a_commit_that_lost_the_compare_and_swap_is_re_planned_by_its_step(stack, tmp_path):
    """A writer outside the lease (an old client, a job that ignores it) commits one of the batch's
    keys to curated after the step planned it as new: the step's commit fails (no silent rebase),
    the step is retried and re-plans against the new head -- the key is superseded, not doubled."""
    events = make_events(8, seed=971)
    send(stack, events)
    release = tmp_path / f"release-{uuid.uuid4().hex}"
    process = start_cli("run", "--until-idle", env={"WAP_FAULTS": f"curated.before_commit=pause:{release}"})
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{release}.reached").exists():
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the curated commit"
            time.sleep(0.1)
        curated = tables(stack)["curated"]
        outside = {field.name: None for field in curated.schema().fields}
        outside.update(
            idempotency_key=events[0]["idempotency_key"],
            event_id="evt_outside",
            event_timestamp=datetime.fromisoformat(events[0]["event_timestamp"]) - timedelta(minutes=1),
            batch_id="outside",
            is_replay=False,
            curated_at=datetime.fromisoformat(events[0]["event_timestamp"]),
        )
        curated.append(pa.Table.from_pylist([outside], schema=curated.schema().as_arrow()))
        release.touch()
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs(RunsFilter(job_name="standard_ingest"))
        retried = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert [e.step_key for e in retried] == ["curated__events"], "only the curated step, once"
    assert retried[0].dagster_event.event_specific_data.error.cause.cls_name == "CommitFailedException"
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    assert breaker_state(stack).status == "GREEN"
