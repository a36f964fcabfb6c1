"""The `make demo` flow against the local server, with exact counts."""

import json
import re
from collections import Counter

import pytest
from dagster import DagsterInstance

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import load_tables
from wap_pipeline.settings import Settings
from wap_pipeline_tests.integration.cli import run_cli

pytestmark = pytest.mark.integration

EVENTS = 600
WAVE = 20
SEED = 42


def sent_keys() -> list[str]:
    """The idempotency keys `send --seed` produced (waves are seeded seed + wave number)."""
    keys = []
    for wave in range(EVENTS // WAVE):
        keys += [e["idempotency_key"] for e in make_events(WAVE, seed=SEED + wave)]
    return keys


def test_every_sent_event_is_in_curated_exactly_once(stack):
    run_cli("provision")
    run_cli("send", "--count", str(EVENTS), "--wave-size", str(WAVE), "--drive", "--seed", str(SEED))
    run_cli("run", "--until-idle")
    status = json.loads(run_cli("status", "--json", "--check").stdout)

    assert status["messages_sent"] == EVENTS
    assert status["raw_rows"] == EVENTS
    assert status["standardized_rows"] == EVENTS
    assert status["curated_rows"] == EVENTS
    assert (status["queue_depth"], status["queue_in_flight"], status["dlq_depth"]) == (0, 0, 0)
    assert status["breaker"] == "GREEN"
    assert status["identity_holds"] is True
    assert status["files_landed"] >= 1

    tables = load_tables(load_wap_catalog(Settings.from_env()))
    curated_keys = tables["curated"].scan(selected_fields=("idempotency_key",)).to_arrow()["idempotency_key"]
    counts = Counter(curated_keys.to_pylist())
    assert set(counts) == set(sent_keys())
    assert max(counts.values()) == 1

    published = wap.published_batches(tables["standardized"])
    assert status["batches_published"] == len(published) >= 1
    assert status["bookmark"]["batch_id"] == published[-1]
    assert wap.published_batches(tables["curated"]) == published
    raw = tables["raw"].scan(selected_fields=("message_id", "landing_file_key", "line_number")).to_arrow()
    assert raw["message_id"].null_count == 0
    assert len(set(raw["message_id"].to_pylist())) == EVENTS

    # Every run the headless runner made is on the instance, as the daemon would have made it.
    with DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert runs and all(r.is_success for r in runs)
        assert all(r.remote_job_origin.location_name == "wap_pipeline" for r in runs)
        partitions = set(instance.get_dynamic_partitions("landing_batches"))
        assert set(published) == partitions


def test_status_check_fails_while_events_are_unaccounted(stack):
    run_cli("send", "--count", "5")
    result = run_cli("status", "--check", check=False)
    assert result.returncode == 2
    assert re.search(r"^every sent message accounted for\s+NO$", result.stdout, re.MULTILINE)
