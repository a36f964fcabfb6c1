"""Jobs: SQS draining, and the per-batch table pipeline."""

from dagster import (
    AssetSelection,
    Failure,
    OpExecutionContext,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
    job,
    op,
)

from wap_pipeline.assets.common import transient_retry_policy
from wap_pipeline.assets.curated import CURATED_KEY, curated_freshness
from wap_pipeline.assets.daily_totals import DAILY_TOTALS_KEY
from wap_pipeline.assets.operations import BREAKER_KEY, DLQ_KEY, QUARANTINE_KEY
from wap_pipeline.assets.raw import RAW_KEY
from wap_pipeline.assets.standardized import STANDARDIZED_KEY
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest.forwarder import PartialFailureError, drain
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import AwsResource, IcebergCatalogResource
from wap_pipeline.settings import Settings

PIPELINE_JOB = "standard_ingest"
INGEST_JOB = "ingest_sqs_to_firehose"
CLEANUP_JOB = "cleanup_abandoned_branches"
OPERATIONS_JOB = "observe_operations"
WRITER_TAG = "wap/writer"


@op(
    description="Receive from SQS, forward to Firehose, delete a message only after Firehose accepted it.",
    retry_policy=transient_retry_policy(),
)
def forward_sqs_to_firehose(context: OpExecutionContext, aws: AwsResource) -> None:
    settings = aws.settings()
    try:
        stats = drain(
            aws.client("sqs"),
            aws.client("firehose"),
            aws.queue_url(),
            settings.stream_name,
            group_size=settings.forward_batch_records,
            visibility_timeout_s=settings.visibility_timeout_s,
            max_messages=settings.ingest_max_messages_per_run,
            wait_s=settings.receive_wait_s,
            limits=settings.payload_limits,
        )
    except PartialFailureError as error:
        raise Failure(str(error), allow_retries=True) from error
    for rejection in stats.rejections:
        context.log.warning(
            f"rejected message {rejection.message_id} (receive {rejection.receive_count} of "
            f"{settings.max_receive_count}): {rejection.reason} -- left on the queue; SQS moves it to the DLQ "
            "after the last receive"
        )
    context.log.info(
        f"received {stats.received}, forwarded {stats.forwarded}, deleted {stats.deleted}, "
        f"rejected {stats.rejected} (left for the DLQ), resent {stats.resent}"
    )


@job(
    name=INGEST_JOB,
    description="Drain the ingest queue into Firehose (started by sqs_sensor).",
    executor_def=in_process_executor,
)
def ingest_job() -> None:
    forward_sqs_to_firehose()


pipeline_job = define_asset_job(
    name=PIPELINE_JOB,
    selection=AssetSelection.assets(RAW_KEY, STANDARDIZED_KEY, CURATED_KEY, DAILY_TOTALS_KEY)
    - AssetSelection.checks(curated_freshness),
    partitions_def=landing_batches,
    executor_def=in_process_executor,
    tags={WRITER_TAG: PIPELINE_JOB},
    description=(
        "raw -> standardized (Write-Audit-Publish) -> curated -> daily totals for one landing batch; "
        "curated's blocking checks guard the totals."
    ),
)


@op(
    description="Remove abandoned audit branches, and branches of runs that died mid-batch, past their retention."
)
def remove_expired_audit_branches(context: OpExecutionContext, catalog: IcebergCatalogResource) -> None:
    with catalog.writing(context, "standardized") as tables:
        removed = wap.remove_expired_branches(
            tables["standardized"],
            unfinished_retention_ms=Settings.from_env().abandoned_branch_retention_ms,
        )
    context.log.info(f"removed {len(removed)} expired abandoned branch(es): {removed}")


@job(
    name=CLEANUP_JOB,
    description="Enforce the retention of abandoned audit branches (PyIceberg does not).",
    executor_def=in_process_executor,
)
def cleanup_job() -> None:
    remove_expired_audit_branches()


cleanup_schedule = ScheduleDefinition(
    name="daily_branch_cleanup",
    job=cleanup_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    description="Daily: remove abandoned audit branches past their retention.",
)


operations_job = define_asset_job(
    name=OPERATIONS_JOB,
    selection=AssetSelection.assets(DLQ_KEY, BREAKER_KEY, QUARANTINE_KEY)
    | AssetSelection.checks(curated_freshness),
    executor_def=in_process_executor,
    description="Observe the pipeline's health: DLQ depth and age, breaker, quarantine size, curated freshness.",
)

operations_schedule = ScheduleDefinition(
    name="observe_operations_every_5_minutes",
    job=operations_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    description="Every 5 minutes: DLQ, breaker, quarantine and curated freshness, so the UI plots them over time.",
)
