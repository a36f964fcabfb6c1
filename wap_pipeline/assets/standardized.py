"""standardized/events: typed, audited rows, published by Write-Audit-Publish in one step.

1. fail fast on a RED breaker (before reading anything);
2. read the batch from raw one data file at a time, mask quarantined records (unless replays
   data-patcher granted: a producer's own ``is_replay`` is ignored, and counted), parse into the
   table's typed schema -- a schema mismatch stops the batch, naming the fields;
3. tag CDE violations (rows are tagged, not dropped);
4. WRITE: each chunk's data files as it is produced (2-4 stream, so memory follows a chunk); after
   the last one, a new branch ``audit_batch_<id>`` (or ``..._retry_<n>``) at main's head and ONE
   commit of the batch to it, with the batch id and ingest bookmark in the snapshot summary (a schema
   mismatch leaves no branch and no commit);
5. AUDIT the batch's rows on the branch: the blocking ``audit`` check, recorded before publishing;
6. PUBLISH by fast-forwarding main to the branch -- data and bookmark in one atomic ref update.

A failed audit abandons the branch (kept, retention recorded), trips the breaker and fails the step
without recording a materialization, so downstream assets do not run.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryRequested,
    asset,
)

from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.assets.raw import RAW_KEY
from wap_pipeline.engines import Standardization
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import payload_fields, top_level_columns
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import (
    AwsResource,
    CircuitBreakerResource,
    EngineResource,
    IcebergCatalogResource,
    QuarantineResource,
)
from wap_pipeline.retry_policy import transient_retry_policy
from wap_pipeline.rules.audit import AuditResult
from wap_pipeline.rules.standardize import SchemaMismatchError

STANDARDIZED_KEY = AssetKey(["standardized", "events"])
AUDIT_CHECK = "audit"
PUBLISH_CONFLICT_RETRIES = 3


def recovery_commands(batch_id: str, sample_ids: list[str]) -> str:
    """The exact commands that recover a batch that failed its audit."""
    example = sample_ids[0] if sample_ids else "<quarantine id>"
    return (
        f"1. list every offending record by quarantine id (`sample_invalid_ids` shows the first ones):\n"
        f"   `data-patcher failures`, then for each: `data-patcher quarantine add {example} --reason '<why>'`\n"
        f"2. (optional) re-inject a fixed copy with data-patcher (`secure-clean`, `replay`): its replay\n"
        f"   bypasses the quarantine (a producer's own `is_replay=true` does not)\n"
        f"3. reset the breaker and re-drive batch {batch_id} from failure (it is written to a new branch):\n"
        f"   `data-patcher resume-pipeline --pipeline standard_ingest --reason '<why>'`"
    )


def _audit_metadata(
    audit: AuditResult, branch: str, batch_id: str, reference: datetime, unauthorized_replays: int
) -> dict:
    return {
        "batch_id": batch_id,
        "branch": branch,
        "reference_time": reference.isoformat(),
        "rows": audit.rows,
        "invalid_rows": audit.invalid_rows,
        "invalid_by_rule": MetadataValue.json(audit.reasons),
        "sample_invalid_ids": MetadataValue.json(audit.sample_invalid_ids),
        "unauthorized_replays": unauthorized_replays,
    }


@asset(
    key=STANDARDIZED_KEY,
    deps=[RAW_KEY],
    partitions_def=landing_batches,
    retry_policy=transient_retry_policy(),
    group_name="standardized",
    owners=["team:data-platform"],
    kinds={"iceberg"},
    description=(
        "Typed events with lineage. Each batch is written to an audit branch and published to main by "
        "fast-forward only if the blocking `audit` check passes; main never holds an invalid row."
    ),
    check_specs=[
        AssetCheckSpec(
            AUDIT_CHECK,
            asset=STANDARDIZED_KEY,
            blocking=True,
            partitions_def=landing_batches,
            description=(
                "Counts invalid rows (CDE violations, schema mismatches) of the batch on its audit branch. "
                "FAILED means the batch was not published and the breaker is RED: quarantine or fix the "
                "records, then `data-patcher resume-pipeline --pipeline standard_ingest`."
            ),
        )
    ],
)
def standardized_events(
    context: AssetExecutionContext,
    aws: AwsResource,
    catalog: IcebergCatalogResource,
    breaker: CircuitBreakerResource,
    quarantine: QuarantineResource,
    engine: EngineResource,
) -> Iterator[AssetCheckResult | MaterializeResult]:
    batch_id = wap.validate_batch_id(context.partition_key)
    with guarded_by_breaker(context, breaker), catalog.writing(context, "standardized") as tables:
        raw, table = tables["raw"], tables["standardized"]
        io = engine.get()  # arrow or spark: reads, branch write, fast-forward (wap_pipeline.engines)
        if wap.is_published(table, batch_id):
            context.log.info(f"batch {batch_id} already published; no-op")
            yield AssetCheckResult(
                check_name=AUDIT_CHECK,
                passed=True,
                metadata={"batch_id": batch_id, "already_published": True},
            )
            yield MaterializeResult(metadata={"batch_id": batch_id, "already_published": True})
            return
        raw_snapshot = wap.published_snapshot(raw, batch_id)
        if raw_snapshot is None:
            # Maintenance keeps raw's commit of every batch not yet published downstream.
            raise Failure(f"batch {batch_id} is not in raw yet; materialize raw/events for it first")
        bookmark = raw_snapshot.summary.get(wap.BOOKMARK_PROPERTY, "")
        # The audit's time reference belongs to the batch (when it landed), so any re-run -- a retry,
        # a re-drive next week -- gives the same verdict; `standardized_at` is lineage only.
        reference = wap.landed_at(raw_snapshot)
        standardized_at = datetime.now(UTC)
        # The scan of every quarantined id runs in the background while the first chunk is read and
        # parsed: the filter first waits for it there.
        quarantined = quarantine.read_in_background()
        job = Standardization(
            payload_fields(table.schema()),
            tuple(top_level_columns(table.schema())),
            standardized_at,
            reference,
        )
        grants = quarantine.replay_grants()
        branch = wap.next_branch_name(table, batch_id)
        try:
            # Parse, mask, tag (every rule is row-local), then a new branch at main's head and ONE
            # commit of the batch to it: a schema mismatch anywhere leaves no branch and no commit.
            written = io.standardize_to_branch(
                raw,
                table,
                batch_id,
                branch,
                job,
                quarantined,
                grants.lookup,
                lambda skipped, unauthorized: {
                    wap.BATCH_ID_PROPERTY: batch_id,
                    wap.BOOKMARK_PROPERTY: bookmark,
                    wap.QUARANTINED_ROWS_PROPERTY: str(skipped),
                    wap.AUDIT_BRANCH_PROPERTY: branch,
                    **wap.ledger_properties(table, batch_id, aws.batch_ids_after),
                    wap.UNAUTHORIZED_REPLAYS_PROPERTY: str(unauthorized),
                },
            )
        except SchemaMismatchError as error:
            yield AssetCheckResult(
                check_name=AUDIT_CHECK,
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "batch_id": batch_id,
                    "stage": "schema",
                    "fields": MetadataValue.json(error.problems),
                    "example_ids": MetadataValue.json(error.examples),
                },
            )
            raise Failure(
                description=(
                    f"batch {batch_id} does not fit the standardized schema: {error}. Nothing was written; "
                    "the bookmark did not move. Evolve the schema (`wap-pipeline schema add-column NAME TYPE`) "
                    "or quarantine the records (`data-patcher quarantine add ID --reason ...`), then "
                    "`data-patcher resume-pipeline --pipeline standard_ingest --reason ...`."
                ),
                metadata={"batch_id": batch_id, "fields": MetadataValue.json(error.problems)},
                allow_retries=False,
            ) from error
        fault_point("standardized.after_branch_write")
        if written.unauthorized_replays:
            context.log.warning(
                f"{written.unauthorized_replays} row(s) of batch {batch_id} claim to be replays without "
                f"data-patcher's grant: treated as not replays (masked when quarantined). "
                f"First: {written.unauthorized_sample}"
            )
        audit = io.audit_batch(table, branch, batch_id)
        metadata = _audit_metadata(audit, branch, batch_id, reference, written.unauthorized_replays)
        fault_point("standardized.after_audit")
        retention_ms = aws.settings().abandoned_branch_retention_ms
        if not audit.passed:
            wap.abandon_branch(table, branch, f"audit failed: {audit.invalid_rows} invalid", retention_ms)
            yield AssetCheckResult(
                check_name=AUDIT_CHECK, passed=False, severity=AssetCheckSeverity.ERROR, metadata=metadata
            )
            raise Failure(
                description=(
                    f"audit failed for batch {batch_id}: {audit.invalid_rows} of {audit.rows} rows invalid "
                    f"({', '.join(f'{k}={v}' for k, v in sorted(audit.reasons.items()))}); branch {branch} "
                    f"abandoned, main and the bookmark unchanged. Offending ids: {audit.sample_invalid_ids}"
                ),
                metadata={
                    **metadata,
                    "recovery": MetadataValue.md(recovery_commands(batch_id, audit.sample_invalid_ids)),
                },
                allow_retries=False,
            )
        # Record the passed audit before publishing: a crash right after the fast-forward must not
        # leave a published batch whose audit was never recorded (a re-run only sees "already published").
        yield AssetCheckResult(check_name=AUDIT_CHECK, passed=True, metadata=metadata)
        try:
            head = io.fast_forward(table, branch)
        except wap.NotFastForwardError as error:
            # Another writer moved main: abandon this branch; the retried step writes a new one
            # from the new head. Only when retries are exhausted does it fail (and trip the breaker).
            wap.abandon_branch(table, branch, str(error), retention_ms)
            if context.retry_number < PUBLISH_CONFLICT_RETRIES:
                context.log.warning(f"{error}; retrying the batch on a new branch")
                raise RetryRequested(max_retries=PUBLISH_CONFLICT_RETRIES, seconds_to_wait=0.5) from error
            raise
        fault_point("standardized.after_publish")
        yield MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "branch": branch,
                "rows_published": written.rows,
                "quarantined_skipped": written.skipped,
                "unauthorized_replays": written.unauthorized_replays,
                "snapshot_id": MetadataValue.text(str(head.snapshot_id)),
                "bookmark": bookmark,
            }
        )
