"""A lost Dagster instance (issue 18): manifests are the single source of batches.

`DAGSTER_HOME` is deleted while the pipeline runs (the process killed -9 mid-stream): the sensor
cursors, the partitions and every run record are gone. Starting again must neither lose a batch (a
recovered manifest is always requested) nor apply one twice (each table's ledger says it is there).
"""

import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from dagster import DagsterInstance, build_sensor_context

from wap_pipeline import aws
from wap_pipeline.definitions import resources_for
from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest.landing import batch_ids_after
from wap_pipeline.operations.maintenance import LAYERS
from wap_pipeline.sensors import landing_sensor
from wap_pipeline.state import ensure_dagster_home
from wap_pipeline_tests.integration.cli import run_cli, start_cli
from wap_pipeline_tests.integration.helpers import curated_key_counts, land_file, tables

pytestmark = pytest.mark.integration


# Small batches (30 records per landing file, 2 files per batch): many batches, killed among them.
SMALL_BATCHES = {"WAP_BATCH_MAX_FILES": "2"}


def test_deleting_dagster_home_mid_stream_neither_loses_nor_duplicates_a_batch(stack):
    run_cli("send", "--count", "600", "--seed", "5")
    process = start_cli("run", "--until-idle", env=SMALL_BATCHES)
    try:
        deadline = time.monotonic() + 600
        while len(wap.published_batches(tables(stack)["curated"])) < 2:
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the pipeline never merged two batches"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    home = Path(stack.state_dir) / "dagster_home"
    assert home.is_dir()
    shutil.rmtree(home)

    run_cli("run", "--until-idle", env=SMALL_BATCHES)
    run_cli("status", "--check")

    manifests = batch_ids_after(aws.client("s3", stack), stack.landing_bucket, stack.manifests_prefix, "")
    assert len(manifests) >= 3
    for layer in LAYERS:
        assert all(wap.is_published(tables(stack)[layer], b) for b in manifests), layer
    raw = (
        tables(stack)["raw"].scan(selected_fields=("landing_file_key", "line_number", "batch_id")).to_arrow()
    )
    lines = Counter(zip(raw["landing_file_key"].to_pylist(), raw["line_number"].to_pylist(), strict=True))
    assert max(lines.values()) == 1, "no landing line was loaded into raw twice"
    assert set(raw["batch_id"].to_pylist()) == set(manifests)
    assert max(curated_key_counts(stack).values()) == 1
    for layer in ("raw", "standardized"):
        published = wap.published_batches(tables(stack)[layer])
        assert sorted(published) == sorted(set(published)) == manifests, f"{layer}: one commit per batch"
    with DagsterInstance.get() as instance:
        assert set(instance.get_dynamic_partitions("landing_batches")) == set(manifests)


def test_a_tick_that_died_after_registering_its_batch_strands_nothing(stack):
    """The sensor wrote the manifest and the partition was added, then the process died: no run was
    launched and the cursor was not stored. The next tick requests the batch again."""
    land_file(stack, [orjson.dumps(e).decode() for e in make_events(25, seed=21)])
    ensure_dagster_home(stack)
    with DagsterInstance.get() as instance:
        with build_sensor_context(instance=instance, resources=resources_for(stack)) as context:
            result = landing_sensor(context)
        [batch] = [request.partition_key for request in result.run_requests]
        instance.add_dynamic_partitions("landing_batches", [batch])  # ... and the process dies here

    run_cli("run", "--until-idle")
    assert all(wap.is_published(tables(stack)[layer], batch) for layer in LAYERS)
    assert sum(curated_key_counts(stack).values()) == 25
    run_cli("status", "--check")
