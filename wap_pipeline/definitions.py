"""The only module that knows every piece: assets, checks, jobs, sensors, resources."""

from dagster import Definitions

from wap_pipeline.assets.curated import (
    curated_events,
    curated_freshness,
    curated_keys_unique,
    curated_row_accounting,
)
from wap_pipeline.assets.daily_totals import curated_daily_totals
from wap_pipeline.assets.operations import circuit_breaker_state, dlq_depth, quarantine_size
from wap_pipeline.assets.raw import (
    firehose_error_output_reingested,
    landed_files_reconciled,
    messages_reconciled,
    raw_events,
)
from wap_pipeline.assets.standardized import standardized_events
from wap_pipeline.jobs import (
    ingest_job,
    maintenance_job,
    maintenance_schedule,
    operations_job,
    operations_schedule,
    pipeline_job,
)
from wap_pipeline.resources import (
    AwsResource,
    CircuitBreakerResource,
    EngineResource,
    IcebergCatalogResource,
    QuarantineResource,
)
from wap_pipeline.sensors import alerts_sensor, landing_sensor, sqs_sensor

RESOURCES = {
    "aws": AwsResource(),
    "catalog": IcebergCatalogResource(),
    "breaker": CircuitBreakerResource(),
    "quarantine": QuarantineResource(),
    "engine": EngineResource(),
}

defs = Definitions(
    assets=[
        raw_events,
        standardized_events,
        curated_events,
        curated_daily_totals,
        dlq_depth,
        circuit_breaker_state,
        quarantine_size,
    ],
    asset_checks=[
        curated_keys_unique,
        curated_row_accounting,
        curated_freshness,
        landed_files_reconciled,
        messages_reconciled,
        firehose_error_output_reingested,
    ],
    jobs=[ingest_job, pipeline_job, maintenance_job, operations_job],
    schedules=[maintenance_schedule, operations_schedule],
    sensors=[sqs_sensor, landing_sensor, alerts_sensor],
    resources=RESOURCES,
)
