"""standardized/events: typed, audited rows, published by Write-Audit-Publish in one step.

The sequence (read and mask, write to ``audit_batch_<id>``, audit, fast-forward main) is
:func:`wap_pipeline.application.standardized.publish_batch`; this asset fails fast on a RED breaker,
holds the table's writer lease, and records each outcome: the blocking ``audit`` check (before the
publish), the materialization, or a ``Failure`` -- a failed audit trips the breaker and records no
materialization, so downstream assets do not run.
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

from wap_pipeline.application.standardized import (
    AlreadyPublished,
    Audited,
    NotInRawError,
    SchemaRejected,
    StandardizeOutcome,
    StandardizePorts,
    publish_batch,
)
from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.assets.raw import RAW_KEY
from wap_pipeline.iceberg import wap
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import (
    AwsResource,
    CircuitBreakerResource,
    EngineResource,
    IcebergCatalogResource,
    QuarantineResource,
)
from wap_pipeline.rules.audit import AuditResult

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
        ports = StandardizePorts(
            engine=engine.get(),  # arrow or spark (wap_pipeline.engines)
            raw=tables["raw"],
            standardized=tables["standardized"],
            read_quarantine=quarantine.read_in_background,
            grants_of=quarantine.replay_grants().lookup,
            batch_ids_after=aws.batch_ids_after,
            abandoned_branch_retention_ms=aws.settings().abandoned_branch_retention_ms,
            now=lambda: datetime.now(UTC),
        )
        try:
            for outcome in publish_batch(ports, batch_id):
                yield from _translate(context, outcome)
        except NotInRawError as error:
            raise Failure(str(error)) from error
        except wap.NotFastForwardError as error:
            # Another writer moved main (the branch is abandoned): the retried step writes a new one
            # from the new head. Only when retries are exhausted does it fail (and trip the breaker).
            if context.retry_number < PUBLISH_CONFLICT_RETRIES:
                context.log.warning(f"{error}; retrying the batch on a new branch")
                raise RetryRequested(max_retries=PUBLISH_CONFLICT_RETRIES, seconds_to_wait=0.5) from error
            raise


def _translate(
    context: AssetExecutionContext, outcome: StandardizeOutcome
) -> Iterator[AssetCheckResult | MaterializeResult]:
    """One outcome of :func:`publish_batch` as what Dagster records; a rejected batch raises ``Failure``."""
    batch_id = outcome.batch_id
    if isinstance(outcome, AlreadyPublished):
        context.log.info(f"batch {batch_id} already published; no-op")
        metadata = {"batch_id": batch_id, "already_published": True}
        yield AssetCheckResult(check_name=AUDIT_CHECK, passed=True, metadata=metadata)
        yield MaterializeResult(metadata=metadata)
    elif isinstance(outcome, SchemaRejected):
        error = outcome.error
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
    elif isinstance(outcome, Audited):
        written, audit = outcome.written, outcome.audit
        if written.unauthorized_replays:
            context.log.warning(
                f"{written.unauthorized_replays} row(s) of batch {batch_id} claim to be replays without "
                f"data-patcher's grant: treated as not replays (masked when quarantined). "
                f"First: {written.unauthorized_sample}"
            )
        metadata = _audit_metadata(
            audit, outcome.branch, batch_id, outcome.reference, written.unauthorized_replays
        )
        if audit.passed:
            yield AssetCheckResult(check_name=AUDIT_CHECK, passed=True, metadata=metadata)
            return
        yield AssetCheckResult(
            check_name=AUDIT_CHECK, passed=False, severity=AssetCheckSeverity.ERROR, metadata=metadata
        )
        raise Failure(
            description=(
                f"audit failed for batch {batch_id}: {audit.invalid_rows} of {audit.rows} rows invalid "
                f"({', '.join(f'{k}={v}' for k, v in sorted(audit.reasons.items()))}); branch "
                f"{outcome.branch} abandoned, main and the bookmark unchanged. "
                f"Offending ids: {audit.sample_invalid_ids}"
            ),
            metadata={
                **metadata,
                "recovery": MetadataValue.md(recovery_commands(batch_id, audit.sample_invalid_ids)),
            },
            allow_retries=False,
        )
    else:
        yield MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "branch": outcome.branch,
                "rows_published": outcome.written.rows,
                "quarantined_skipped": outcome.written.skipped,
                "unauthorized_replays": outcome.written.unauthorized_replays,
                "snapshot_id": MetadataValue.text(str(outcome.snapshot_id)),
                "bookmark": outcome.bookmark,
            }
        )
