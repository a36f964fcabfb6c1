"""raw/events: every landed record of the batch, as it came, plus lineage."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
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

from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import RAW_SCHEMA
from wap_pipeline.ingest import firehose_errors
from wap_pipeline.ingest.landing import Manifest, read_landed_files, read_manifest
from wap_pipeline.ingest.reconcile import messages, unannounced
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import (
    AwsResource,
    CircuitBreakerResource,
    IcebergCatalogResource,
    QuarantineResource,
)
from wap_pipeline.retry_policy import transient_retry_policy
from wap_pipeline.rules.envelope import raw_table

RAW_KEY = AssetKey(["raw", "events"])


def _raw_chunks(
    s3, bucket: str, manifest: Manifest, batch_id: str, ingested_at: datetime
) -> Iterator[pa.Table]:
    """The batch's raw rows, landing file after landing file, in chunks of at most about
    ``CHUNK_BYTES`` of NDJSON (a chunk is closed before a file would take it past that, so its size
    does not follow the landing files' size): only one chunk is in memory while its data file is
    written."""
    schema = RAW_SCHEMA.as_arrow()
    group: list[pa.Table] = []
    size = 0
    for landed, data in read_landed_files(s3, bucket, manifest.files):  # next GETs in flight meanwhile
        if group and size + len(data) > wap.CHUNK_BYTES:
            yield pa.concat_tables(group)
            group, size = [], 0
        size += len(data)
        group.append(raw_table(data, landed.key, batch_id, ingested_at, schema))  # parsed vectorised
        del data
    if group:
        yield pa.concat_tables(group)


@asset(
    key=RAW_KEY,
    partitions_def=landing_batches,
    retry_policy=transient_retry_policy(),
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
        table = tables["raw"]
        if wap.is_published(table, batch_id):
            context.log.info(f"batch {batch_id} is already in raw; nothing to do")
            return MaterializeResult(metadata={"batch_id": batch_id, "rows": 0, "already_loaded": True})
        settings = aws.settings()
        s3 = aws.client("s3")
        manifest = read_manifest(s3, settings.landing_bucket, settings.manifests_prefix, batch_id)
        ingested_at = datetime.now(UTC)
        # Data files written chunk by chunk, one commit for the batch.
        with wap.StagedAppend(table) as staged:
            staged.write_all(_raw_chunks(s3, settings.landing_bucket, manifest, batch_id, ingested_at))
            staged.commit(
                {
                    wap.BATCH_ID_PROPERTY: batch_id,
                    wap.BOOKMARK_PROPERTY: manifest.bookmark,
                    wap.LANDED_AT_PROPERTY: manifest.landed_at.isoformat(),
                    **wap.ledger_properties(table, batch_id, aws.batch_ids_after),
                }
            )
        fault_point("raw.after_append")
        return MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "rows": staged.rows,
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
