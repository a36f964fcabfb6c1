"""Small helpers shared by the integration tests: send bodies, read tables, read the breaker."""

from __future__ import annotations

from collections import Counter

import orjson

from wap_pipeline import aws
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import ensure_tables
from wap_pipeline.ingest.producer import send_bodies
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import BreakerState, CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.settings import Settings
from wap_pipeline.state import record_sent


def send(settings: Settings, events: list[dict], attributes: list[dict] | None = None) -> list[str]:
    """Send events as the producer would, and record them in the sent ledger."""
    return send_raw(settings, [orjson.dumps(e).decode() for e in events], attributes)


def send_raw(settings: Settings, bodies: list[str], attributes: list[dict] | None = None) -> list[str]:
    """Send bodies exactly as given (malformed ones too), and record them in the sent ledger."""
    sqs = aws.client("sqs", settings)
    ids = send_bodies(sqs, queue_url(sqs, settings.queue_name), bodies, attributes)
    replays = sum(1 for a in attributes or [] if a.get("is_replay") == "true")
    record_sent(settings, len(bodies) - replays)
    if replays:
        record_sent(settings, replays, kind="replay")
    return ids


def dlq_messages(settings: Settings) -> list:
    from wap_pipeline.ingest.dlq import browse

    sqs = aws.client("sqs", settings)
    return browse(sqs, queue_url(sqs, settings.dlq_name))


def tables(settings: Settings) -> dict:
    return ensure_tables(load_wap_catalog(settings))


def curated_key_counts(settings: Settings) -> Counter:
    curated = tables(settings)["curated"]
    return Counter(
        curated.scan(selected_fields=("idempotency_key",)).to_arrow()["idempotency_key"].to_pylist()
    )


def breaker_state(settings: Settings) -> BreakerState:
    return CircuitBreaker(
        aws.client("dynamodb", settings), settings.breaker_table, settings.pipeline_name
    ).state()


def quarantine(settings: Settings) -> Quarantine:
    return Quarantine(aws.client("dynamodb", settings), settings.quarantine_table)


def check_evaluations(asset: list[str], check_name: str) -> list:
    """Evaluations (passed, metadata, partition) of one asset check on the instance, newest first."""
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    with DagsterInstance.get() as instance:
        records = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey(asset), check_name), limit=100
        )
    return [
        r.event.dagster_event.event_specific_data
        for r in records
        if r.event is not None and r.event.dagster_event is not None
    ]


def latest_partition_runs(job_name: str = "standard_ingest") -> dict[str, list]:
    """Runs of the pipeline job by partition, newest first."""
    from dagster import DagsterInstance, RunsFilter

    runs: dict[str, list] = {}
    with DagsterInstance.get() as instance:
        for run in instance.get_runs(RunsFilter(job_name=job_name)):
            runs.setdefault(run.tags.get("dagster/partition"), []).append(run)
    return runs
