"""raw/events: every landed record of the batch, as it came, plus lineage."""

from datetime import UTC, datetime, timedelta
from functools import partial

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from wap_pipeline.application.raw import AlreadyLoaded, LoadPorts, load_batch
from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest import firehose_errors
from wap_pipeline.ingest.landing import read_landed_files, read_manifest
from wap_pipeline.ingest.reconcile import messages, unannounced
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import (
    AwsResource,
    CircuitBreakerResource,
    IcebergCatalogResource,
    QuarantineResource,
)

RAW_KEY = AssetKey(["raw", "events"])


@asset(
    key=RAW_KEY,
    partitions_def=landing_batches,
    group_name="ingestion",
    owners=["team:data-platform"],
    kinds={"iceberg", "s3"},
    description=(
        "Every record Firehose landed in S3 for the batch, kept as it came (body verbatim) with its "
        "lineage: SQS message ids, landing file and line, ingestion time. Append-only; one commit per batch."
    ),
)
def raw_events(
    context: AssetExecutionContext,
    aws: AwsResource,
    catalog: IcebergCatalogResource,
    breaker: CircuitBreakerResource,
) -> MaterializeResult:
    batch_id = wap.validate_batch_id(context.partition_key)
    with guarded_by_breaker(context, breaker), catalog.writing(context, "raw") as tables:
        settings, s3 = aws.settings(), aws.client("s3")
        ports = LoadPorts(
            raw=tables["raw"],
            read_manifest=partial(read_manifest, s3, settings.landing_bucket, settings.manifests_prefix),
            # The next GETs are in flight while a file is parsed.
            read_files=lambda manifest: read_landed_files(s3, settings.landing_bucket, manifest.files),
            batch_ids_after=aws.batch_ids_after,
            now=lambda: datetime.now(UTC),
        )
        outcome = load_batch(ports, batch_id)
    if isinstance(outcome, AlreadyLoaded):
        context.log.info(f"batch {batch_id} is already in raw; nothing to do")
        return MaterializeResult(metadata={"batch_id": batch_id, "rows": 0, "already_loaded": True})
    manifest = outcome.manifest
    return MaterializeResult(
        metadata={
            "batch_id": batch_id,
            "rows": outcome.rows,
            "files": len(manifest.files),
            "bytes": sum(f.size for f in manifest.files),
            "bookmark": manifest.bookmark,
            "landed_at": manifest.landed_at.isoformat(),
        }
    )


RECONCILIATION_CHECK = "landed_files_reconciled"


@asset_check(
    asset=RAW_KEY,
    name=RECONCILIATION_CHECK,
    description=(
        "Every file that landed in the last `WAP_RECONCILE_WINDOW_HOURS` (48) and is older than "
        "`WAP_RECONCILE_AFTER_MINUTES` (15) is in a batch manifest. Failed means S3's notification of a file "
        "was lost, so no batch reads it: the metadata names the keys; `wap-pipeline reconcile --adopt` "
        "batches them. Runs with the operations job (every 5 minutes)."
    ),
)
def landed_files_reconciled(aws: AwsResource) -> AssetCheckResult:
    missing = unannounced(aws.client("s3"), aws.settings(), datetime.now(UTC))
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "unbatched_files": len(missing),
            "unbatched_bytes": sum(o.size for o in missing),
            "sample_keys": MetadataValue.json([o.key for o in missing[:20]]),
            "recovery": MetadataValue.text("wap-pipeline reconcile --adopt --reason '...'"),
        },
    )


MESSAGES_CHECK = "messages_reconciled"


@asset_check(
    asset=RAW_KEY,
    name=MESSAGES_CHECK,
    description=(
        "Per message id over the last `WAP_RECONCILE_WINDOW_HOURS`, from the pipeline's own records: every "
        "message the forwarder's receipts say Firehose accepted (older than `WAP_RECONCILE_AFTER_MINUTES`) "
        "landed in a batch, every landed row was forwarded, and every landed row of a published batch is in "
        "standardized or masked by a quarantined id. Failed names the message ids. Runs with the operations "
        "job."
    ),
)
def messages_reconciled(
    aws: AwsResource, catalog: IcebergCatalogResource, quarantine: QuarantineResource
) -> AssetCheckResult:
    settings, tables, now = aws.settings(), catalog.tables(), datetime.now(UTC)
    account = messages(
        aws.client("s3"),
        tables["raw"],
        tables["standardized"],
        quarantine.quarantine().ids(),
        settings,
        now,
        now - timedelta(hours=settings.reconcile_window_hours),
    )
    return AssetCheckResult(
        passed=account.holds,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            **{k: v for k, v in account.as_dict().items() if not k.startswith("sample_") and k != "holds"},
            **{k: MetadataValue.json(v) for k, v in account.as_dict().items() if k.startswith("sample_")},
            "recovery": MetadataValue.text(
                "not landed: `data-patcher firehose-errors list` and `wap-pipeline reconcile` (files in no batch);"
                " not forwarded: find who writes to the stream or the landing prefix; lost: docs/runbook.md"
            ),
        },
    )


FIREHOSE_ERRORS_CHECK = "firehose_error_output_reingested"


@asset_check(
    asset=RAW_KEY,
    name=FIREHOSE_ERRORS_CHECK,
    description=(
        "Nothing waits in Firehose's error output (`landing-errors/`): records Firehose gave up on, already "
        "deleted from SQS, that only a re-ingest brings back. Failed names the files; "
        "`data-patcher firehose-errors reingest --reason ...` lands their records exactly once. Runs with "
        "the operations job."
    ),
)
def firehose_error_output_reingested(aws: AwsResource) -> AssetCheckResult:
    waiting = firehose_errors.pending(aws.client("s3"), aws.settings())
    return AssetCheckResult(
        passed=not waiting,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "error_files": len(waiting),
            "sample_keys": MetadataValue.json([o.key for o in waiting[:20]]),
            "recovery": MetadataValue.text("data-patcher firehose-errors reingest --reason '...'"),
        },
    )
