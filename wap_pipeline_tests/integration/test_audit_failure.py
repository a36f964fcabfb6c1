"""A batch with a CDE violation is never published; the breaker stops the batches after it."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import load_tables
from wap_pipeline.ingest.producer import send_bodies
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import CircuitBreaker
from wap_pipeline.settings import Settings
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import run_cli
from wap_pipeline_tests.integration.helpers import check_evaluations

pytestmark = pytest.mark.integration


def send(settings: Settings, events: list[dict]) -> None:
    sqs = aws.client("sqs", settings)
    send_bodies(sqs, queue_url(sqs, settings.queue_name), [orjson.dumps(e).decode() for e in events])


def test_failed_audit_blocks_publish_and_trips_the_breaker(stack):
    events = make_events(30, seed=11)
    bad = events[7]
    bad["idempotency_key"] = None
    send(stack, events)
    assert drive().failed

    tables = load_tables(load_wap_catalog(stack))
    standardized = tables["standardized"]
    assert wap.published_batches(standardized) == []
    assert wap.bookmark(standardized) is None
    assert tables["curated"].scan().to_arrow().num_rows == 0
    assert tables["raw"].scan().to_arrow().num_rows == 30, "raw keeps every record as it came"

    with DagsterInstance.get() as instance:
        (batch_id,) = instance.get_dynamic_partitions("landing_batches")
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [AssetCheckKey(AssetKey(["standardized", "events"]), "audit")]
        )[AssetCheckKey(AssetKey(["standardized", "events"]), "audit")]
        evaluation = check.event.dagster_event.event_specific_data
        assert evaluation.passed is False
        assert evaluation.metadata["invalid_rows"].value == 1
        assert evaluation.metadata["sample_invalid_ids"].value == [bad["event_id"]]
        assert check.partition == batch_id
        materializations = instance.fetch_materializations(AssetKey(["standardized", "events"]), limit=10)
        assert materializations.records == [], "a failed audit records no materialization"

    # The failed branch is kept (abandoned, with its retention recorded), never published.
    branch = wap.branch_name(batch_id)
    standardized.refresh()
    assert branch in standardized.metadata.refs
    assert f"{wap.ABANDONED_PROPERTY_PREFIX}{branch}" in standardized.metadata.properties
    assert wap.scan_batch(standardized, branch, batch_id).num_rows == 30

    state = CircuitBreaker(aws.client("dynamodb", stack), stack.breaker_table, stack.pipeline_name).state()
    assert state.status == "RED"
    assert state.batch_id == batch_id
    assert "idempotency_key_missing" in state.reason
    assert state.tripped_by == "dagster:standardized/events"

    # A later batch fails fast: nothing of it is read or written while the breaker is RED.
    send(stack, make_events(10, seed=12))
    assert drive().failed
    assert tables["raw"].refresh().scan().to_arrow().num_rows == 30
    with DagsterInstance.get() as instance:
        assert len(instance.get_dynamic_partitions("landing_batches")) == 2


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_batch_re_audited_days_later_gets_the_same_verdict(stack):
    """The audit's time reference belongs to the batch (when it landed), not to the run: re-driving
    the stored batch with the process clock five days later flags exactly the same rows. (Against the
    processing time, the event three days ahead would no longer be "in the future" and would publish.)"""
    sent_at = datetime.now(UTC)  # the one notion of now of this test: the events, and their landing
    events = make_events(12, seed=15, now=sent_at)
    ahead = events[4]
    ahead["event_timestamp"] = _iso(sent_at + timedelta(days=3))
    events[9]["event_timestamp"] = _iso(sent_at + timedelta(hours=20))  # within the allowed skew
    send(stack, events)
    assert drive().failed
    (first,) = check_evaluations(["standardized", "events"], "audit")
    assert first.passed is False
    assert first.metadata["invalid_by_rule"].value == {"event_timestamp_in_future": 1}
    assert first.metadata["sample_invalid_ids"].value == [ahead["event_id"]]

    run_cli("breaker", "reset", "--reason", "re-audit the batch later")
    assert run_cli("redrive", check=False, clock_offset="+5d").returncode == 1
    later, earlier = check_evaluations(["standardized", "events"], "audit")
    assert earlier.metadata["branch"].value != later.metadata["branch"].value, "a retry writes a new branch"
    for name in ("rows", "invalid_rows", "invalid_by_rule", "sample_invalid_ids", "reference_time"):
        assert later.metadata[name].value == first.metadata[name].value, name
    assert later.passed is False
    standardized = load_tables(load_wap_catalog(stack))["standardized"]
    assert wap.published_batches(standardized) == []
