"""The only module that knows every piece: assets, checks, jobs, sensors, resources.

``defs`` is loaded by Dagster in each process that needs it (webserver, daemon, every run), and wires
the resources from the settings of that process's environment (``WAP_PROFILE`` and the ``WAP_*``
variables, :class:`~wap_pipeline.settings.Settings`): the profile picks the endpoints and credentials,
the values show in the UI as each resource's ``config``. Tests wire their own with :func:`resources_for`.
"""

from dagster import ConfigurableResource, Definitions, JobDefinition, definitions

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
    settings_resource,
)
from wap_pipeline.sensors import alerts_sensor, landing_sensor, sqs_sensor
from wap_pipeline.settings import Settings

ASSETS = [
    raw_events,
    standardized_events,
    curated_events,
    curated_daily_totals,
    dlq_depth,
    circuit_breaker_state,
    quarantine_size,
]
ASSET_CHECKS = [
    curated_keys_unique,
    curated_row_accounting,
    curated_freshness,
    landed_files_reconciled,
    messages_reconciled,
    firehose_error_output_reingested,
]


def resources_for(settings: Settings) -> dict[str, ConfigurableResource]:
    """Every resource, built from one settings resource: the one place where the system is wired."""
    config = settings_resource(settings)
    return {
        "aws": AwsResource(config=config),
        "catalog": IcebergCatalogResource(config=config),
        "breaker": CircuitBreakerResource(config=config),
        "quarantine": QuarantineResource(config=config),
        "engine": EngineResource(config=config),
    }


@definitions
def defs() -> Definitions:
    return Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[ingest_job, pipeline_job, maintenance_job, operations_job],
        schedules=[maintenance_schedule, operations_schedule],
        sensors=[sqs_sensor, landing_sensor, alerts_sensor],
        resources=resources_for(Settings.from_env()),
    )


def job_named(name: str) -> JobDefinition:
    """One job of :func:`defs`, resolved with its resources: what a headless run reconstructs
    (``dagster.build_reconstructable_job``) in the process that executes it."""
    return defs().resolve_job_def(name)
