"""Sensors that start the runs: SQS has messages -> drain it; new landings -> new batch partitions."""

import time

from botocore.exceptions import BotoCoreError, ClientError
from dagster import (
    AssetCheckKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from wap_pipeline.assets.raw import FIREHOSE_ERRORS_CHECK, MESSAGES_CHECK, RAW_KEY, RECONCILIATION_CHECK
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.ingest.forwarder_breaker import forwarder_breaker
from wap_pipeline.ingest.landing import LandingCursor, discover
from wap_pipeline.jobs import INGEST_JOB, ingest_job, pipeline_job
from wap_pipeline.operations.alerts import AlertCursor, CheckFailure, alerts_due
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import AwsResource, CircuitBreakerResource, IcebergCatalogResource

_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@sensor(
    job=ingest_job,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts the SQS -> Firehose drain when the ingest queue has visible messages.",
)
def sqs_sensor(context: SensorEvaluationContext, aws: AwsResource):
    try:
        visible, in_flight = sqs_calls.depth(aws.client("sqs"), aws.queue_url())
    except (BotoCoreError, ClientError) as error:
        return SkipReason(f"ingest queue unreachable, will retry: {error}")
    if visible == 0:
        return SkipReason(f"ingest queue empty ({in_flight} in flight)")
    paused = forwarder_breaker(aws.client("dynamodb"), aws.settings()).state()
    if paused.is_open and time.time() < paused.next_probe_at:
        return SkipReason(
            f"{visible} messages waiting; forwarder paused ({paused.reason[:200]}), next Firehose probe in "
            f"{paused.next_probe_at - time.time():.0f}s"
        )
    active = context.instance.get_runs_count(RunsFilter(job_name=INGEST_JOB, statuses=_ACTIVE))
    if active:
        return SkipReason(f"{visible} messages waiting; a drain run is already active")
    return RunRequest(tags={"wap/queue_depth": str(visible)})


@sensor(
    job=pipeline_job,
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Groups the landed files S3 announced (ObjectCreated notifications on the landing-events queue) into "
        "batches: one partition and one run per batch. Manifests are "
        "the truth: one left by a tick that died, or every one after a lost Dagster instance, is registered "
        "and requested again (the run key dedups) unless the batch is through the last layer."
    ),
)
def landing_sensor(context: SensorEvaluationContext, aws: AwsResource, catalog: IcebergCatalogResource):
    settings = aws.settings()
    cursor = LandingCursor.from_json(context.cursor)
    try:
        discovery = discover(
            aws.client("s3"),
            aws.client("sqs"),
            settings.landing_bucket,
            settings.landing_prefix,
            settings.manifests_prefix,
            aws.queue_url(settings.landing_events_queue),
            cursor,
            settings.batch_max_files,
        )
    except (BotoCoreError, ClientError) as error:
        return SkipReason(f"landing bucket or landing-events queue unreachable, will retry: {error}")
    batches = [m.batch_id for m in discovery.manifests]
    new = [b for b in batches if not context.instance.has_dynamic_partition(landing_batches.name, b)]
    # A batch in the last layer's ledger is through every step: a re-run would change nothing.
    through = wap.ledger(catalog.tables()["daily_totals"], lost_ok=True) if batches else wap.Ledger()
    return SensorResult(
        run_requests=[RunRequest(partition_key=b, run_key=b) for b in batches if b not in through],
        dynamic_partitions_requests=[landing_batches.build_add_request(new)] if new else [],
        cursor=discovery.cursor.to_json(),
    )


RECONCILIATION_CHECKS = tuple(
    AssetCheckKey(RAW_KEY, name) for name in (RECONCILIATION_CHECK, MESSAGES_CHECK, FIREHOSE_ERRORS_CHECK)
)


def failed_reconciliations(instance: DagsterInstance) -> list[CheckFailure]:
    """The latest evaluation of each reconciliation check, where it failed."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(RECONCILIATION_CHECKS))
    failures = []
    for key, record in latest.items():
        evaluation = record.event.asset_check_evaluation if record.event is not None else None
        if evaluation is None or evaluation.passed:
            continue
        details = {
            name: getattr(value, "value", value)
            for name, value in evaluation.metadata.items()
            if name != "recovery"
        }
        failures.append(CheckFailure(key.name, record.id, details))
    return failures


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Publishes alerts to the SNS topic WAP_ALERTS_TOPIC: the breaker went RED (once per trip), the DLQ "
        "grew, the forwarder paused for a Firehose outage, a reconciliation check failed. Subscribe email or "
        "chat to the topic."
    ),
)
def alerts_sensor(context: SensorEvaluationContext, aws: AwsResource, breaker: CircuitBreakerResource):
    settings = aws.settings()
    try:
        dlq_visible, dlq_in_flight = sqs_calls.depth(aws.client("sqs"), aws.queue_url(settings.dlq_name))
        due, cursor = alerts_due(
            AlertCursor.from_json(context.cursor),
            breaker.breaker().state(),
            forwarder_breaker(aws.client("dynamodb"), settings).state(),
            dlq_visible + dlq_in_flight,
            failed_reconciliations(context.instance),
        )
        if due:
            sns, topic = aws.client("sns"), aws.alerts_topic_arn()
            for alert in due:
                sns.publish(TopicArn=topic, Subject=alert.subject, Message=alert.message)
    except (BotoCoreError, ClientError) as error:
        return SkipReason(f"could not check or publish alerts, will retry: {error}")
    context.update_cursor(cursor.to_json())
    return SkipReason(f"published {len(due)} alert(s)" if due else "nothing new to announce")
