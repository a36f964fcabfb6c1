"""Jobs: SQS draining, and the per-batch table pipeline."""

from datetime import UTC, datetime, timedelta

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    Failure,
    OpExecutionContext,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
    job,
    op,
)

from wap_pipeline.assets.curated import CURATED_KEY, curated_freshness
from wap_pipeline.assets.daily_totals import DAILY_TOTALS_KEY
from wap_pipeline.assets.operations import BREAKER_KEY, DLQ_KEY, QUARANTINE_KEY
from wap_pipeline.assets.raw import (
    RAW_KEY,
    firehose_error_output_reingested,
    landed_files_reconciled,
    messages_reconciled,
)
from wap_pipeline.assets.standardized import STANDARDIZED_KEY
from wap_pipeline.ingest.forwarder import PartialFailureError, drain
from wap_pipeline.ingest.forwarder_breaker import forwarder_breaker
from wap_pipeline.ingest.receipts import receipt_log
from wap_pipeline.operations.actions import Operator
from wap_pipeline.operations.maintenance import LAYERS, maintain
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import AwsResource, IcebergCatalogResource
from wap_pipeline.retry_policy import retried_when_transient

PIPELINE_JOB = "standard_ingest"
INGEST_JOB = "ingest_sqs_to_firehose"
MAINTENANCE_JOB = "table_maintenance"
OPERATIONS_JOB = "observe_operations"
WRITER_TAG = "wap/writer"


@op(
    description="Receive from SQS, forward to Firehose, delete a message only after Firehose accepted it.",
)
def forward_sqs_to_firehose(context: OpExecutionContext, aws: AwsResource) -> None:
    settings = aws.settings()
    with retried_when_transient(context, settings):
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
                breaker=forwarder_breaker(aws.client("dynamodb"), settings),
                receipts=receipt_log(aws.client("s3"), settings),
            )
        except PartialFailureError as error:
            raise Failure(str(error), allow_retries=True) from error
    for rejection in stats.rejections:
        context.log.warning(
            f"rejected message {rejection.message_id} (receive {rejection.receive_count} of "
            f"{settings.max_receive_count}): {rejection.reason} -- left on the queue; SQS moves it to the DLQ "
            "after the last receive"
        )
    if stats.paused:
        context.log.warning(
            f"forwarder paused, Firehose unavailable ({stats.paused[:300]}): {stats.released} message(s) given "
            "back to the queue; receiving resumes when a probe finds Firehose back (no receive is spent)"
        )
    context.log.info(
        f"received {stats.received}, forwarded {stats.forwarded}, deleted {stats.deleted}, "
        f"rejected {stats.rejected} (left for the DLQ), resent {stats.resent}, released {stats.released}"
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
    - AssetSelection.checks(
        curated_freshness, landed_files_reconciled, messages_reconciled, firehose_error_output_reingested
    ),
    partitions_def=landing_batches,
    executor_def=in_process_executor,
    tags={WRITER_TAG: PIPELINE_JOB},
    description=(
        "raw -> standardized (Write-Audit-Publish) -> curated -> daily totals for one landing batch; "
        "curated's blocking checks guard the totals."
    ),
)


@op(
    description=(
        "Table maintenance: remove published audit branches and abandoned ones past their retention, "
        "expire snapshots older than WAP_MAINTAIN_OLDER_THAN_HOURS, delete orphan files, compact curated."
    )
)
def maintain_tables(context: OpExecutionContext, aws: AwsResource, catalog: IcebergCatalogResource) -> None:
    settings = aws.settings()
    operator = Operator(settings, f"dagster:{MAINTENANCE_JOB}")
    # A writer of every table: it waits for, then holds, their leases (no pipeline step commits meanwhile).
    with (
        operator.acting("tables.maintain", "all tables", f"run {context.run_id}") as outcome,
        catalog.writing(context, *LAYERS) as tables,
    ):
        report = maintain(
            tables,
            aws.batch_ids_after,
            datetime.now(UTC),
            older_than=timedelta(hours=settings.maintain_older_than_hours),
            unfinished_branch_retention_ms=settings.abandoned_branch_retention_ms,
            compact_min_files=settings.curated_compact_min_files,
        )
        outcome.update(report.as_dict())
    for table in report.tables:
        context.log.info(f"{table.table}: {table.as_dict()}")


@job(
    name=MAINTENANCE_JOB,
    description="Expire snapshots, remove finished audit branches, delete orphan files, compact curated.",
    executor_def=in_process_executor,
    # A writer like the pipeline: the run queue never runs it beside a pipeline run.
    tags={WRITER_TAG: MAINTENANCE_JOB},
)
def maintenance_job() -> None:
    maintain_tables()


maintenance_schedule = ScheduleDefinition(
    name="daily_table_maintenance",
    job=maintenance_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily: `wap-pipeline maintain` (snapshot expiry, branches, orphan files, compaction).",
)


operations_job = define_asset_job(
    name=OPERATIONS_JOB,
    selection=AssetSelection.assets(DLQ_KEY, BREAKER_KEY, QUARANTINE_KEY)
    | AssetSelection.checks(
        curated_freshness, landed_files_reconciled, messages_reconciled, firehose_error_output_reingested
    ),
    executor_def=in_process_executor,
    description=(
        "Observe the pipeline's health: DLQ depth and age, breaker, quarantine size, curated freshness, "
        "landed files reconciled with the manifests, messages with the forwarder's receipts."
    ),
)

operations_schedule = ScheduleDefinition(
    name="observe_operations_every_5_minutes",
    job=operations_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes: DLQ, breaker, quarantine and curated freshness, so the UI plots them over time.",
)
