"""curated/events: one row per idempotency_key, one atomic Iceberg commit per batch, and its checks.

The merge (one atomic commit per batch, then compaction of the days it touched) is
:func:`wap_pipeline.application.curated.merge_batch`; this asset fails fast on a RED breaker, holds the
table's writer lease and records the outcome. Compaction matters: every batch adds a file to each day
it touches (``WAP_CURATED_COMPACT_MIN_FILES``), and without it the next batch's lookup, the checks and
the daily totals would open one more file per batch of history. The checks below verify the commit's
recorded accounting against what Iceberg actually committed.
"""

from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from wap_pipeline.application.curated import (
    AlreadyMerged,
    CuratePorts,
    NotInStandardizedError,
    account_rows,
    curated_commit_summary,
    curated_lag,
    merge_batch,
)
from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.assets.standardized import STANDARDIZED_KEY
from wap_pipeline.iceberg import wap
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import AwsResource, CircuitBreakerResource, EngineResource, IcebergCatalogResource
from wap_pipeline.rules.curated import DedupWindow

CURATED_KEY = AssetKey(["curated", "events"])
UNIQUE_CHECK = "keys_unique_in_window"
ACCOUNTING_CHECK = "row_accounting"
FRESHNESS_CHECK = "standardized_batches_curated_in_time"

_RECOVERY = (
    "Stop and look before re-driving: `wap-pipeline breaker status`; inspect the batch in the Dagster "
    "UI (curated/events, Checks tab); after the cause is fixed, `wap-pipeline breaker reset --reason ...` "
    "and `wap-pipeline rerun-failed`."
)


def _window_of(summary: dict) -> DedupWindow | None:
    raw = summary.get(wap.CURATED_WINDOW, "")
    if not raw:
        return None
    start, end = raw.split("/")
    return DedupWindow(datetime.fromisoformat(start), datetime.fromisoformat(end))


@asset(
    key=CURATED_KEY,
    deps=[STANDARDIZED_KEY],
    partitions_def=landing_batches,
    group_name="curated",
    owners=["team:data-platform"],
    kinds={"iceberg"},
    description=(
        "One row per idempotency_key: a replay supersedes the original, otherwise the latest "
        "event_timestamp wins. Each batch is one atomic commit. Partitioned by day of event_timestamp; "
        "a batch deduplicates within `WAP_CURATED_DEDUP_WINDOW_DAYS` of its events."
    ),
)
def curated_events(
    context: AssetExecutionContext,
    aws: AwsResource,
    catalog: IcebergCatalogResource,
    breaker: CircuitBreakerResource,
    engine: EngineResource,
) -> MaterializeResult:
    batch_id = wap.validate_batch_id(context.partition_key)
    settings = aws.settings()
    with guarded_by_breaker(context, breaker), catalog.writing(context, "curated") as tables:
        ports = CuratePorts(
            engine=engine.get(),  # arrow or spark (wap_pipeline.engines)
            standardized=tables["standardized"],
            curated=tables["curated"],
            batch_ids_after=aws.batch_ids_after,
            dedup_window_days=settings.curated_dedup_window_days,
            compact_min_files=settings.curated_compact_min_files,
            now=lambda: datetime.now(UTC),
        )
        try:
            outcome = merge_batch(ports, batch_id)
        except NotInStandardizedError as error:
            raise Failure(str(error)) from error
        if isinstance(outcome, AlreadyMerged):
            context.log.info(f"batch {batch_id} already merged into curated; no-op")
            return MaterializeResult(metadata={"batch_id": batch_id, "already_merged": True})
        summary, compacted = outcome.summary, outcome.compacted
        if compacted.days:
            context.log.info(
                f"compacted curated days {[d.isoformat() for d in compacted.days]}: "
                f"{compacted.files_before} files -> {compacted.files_after}, {compacted.rows} rows"
            )
        return MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "standardized_rows": summary.standardized_rows,
                "inserted": summary.inserted,
                "superseded": summary.superseded,
                "skipped_duplicates": summary.skipped,
                "keys_looked_up_in_window": summary.looked_up,
                "touched_days": MetadataValue.json([d.isoformat() for d in summary.touched_days]),
                "compacted_days": MetadataValue.json([d.isoformat() for d in compacted.days]),
                "compacted_files": f"{compacted.files_before} -> {compacted.files_after}",
            }
        )


def _trip_on_failure(
    context: AssetCheckExecutionContext,
    breaker: CircuitBreakerResource,
    check_name: str,
    result: AssetCheckResult,
    why: str,
) -> AssetCheckResult:
    """A failed curated check is money-grade: stop later batches until an operator has looked."""
    if not result.passed:
        breaker.breaker().trip(
            reason=f"curated/events check {check_name} failed: {why}. {_RECOVERY}",
            batch_id=context.partition_key,
            run_id=context.run.run_id,
            tripped_by=f"dagster:check:{check_name}",
        )
        context.log.error(f"{check_name} failed for batch {context.partition_key}: {why}")
    return result


@asset_check(
    asset=CURATED_KEY,
    name=UNIQUE_CHECK,
    blocking=True,
    partitions_def=landing_batches,
    description=(
        "No idempotency_key occurs twice in curated within the batch's deduplication window (the event "
        "days of the batch, widened by the window). Failed means a duplicate reached curated: the "
        "breaker trips and what is downstream is blocked. Recover: find the keys in the check's metadata, "
        "fix, `wap-pipeline breaker reset --reason ...`, `wap-pipeline rerun-failed`."
    ),
)
def curated_keys_unique(
    context: AssetCheckExecutionContext,
    catalog: IcebergCatalogResource,
    breaker: CircuitBreakerResource,
    engine: EngineResource,
) -> AssetCheckResult:
    batch_id = context.partition_key
    table = catalog.tables()["curated"]
    summary = curated_commit_summary(table, batch_id)
    window = _window_of(summary or {})
    if window is None:
        return AssetCheckResult(passed=True, metadata={"batch_id": batch_id, "rows_checked": 0})
    # Counted by the engine (Spark: on its executors): the window's keys never come to this process
    # whole, only the counts and a sample of the repeated keys.
    found = engine.get().duplicate_keys(table, window)
    result = AssetCheckResult(
        passed=not found.keys,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "batch_id": batch_id,
            "rows_checked": found.rows,
            "duplicate_keys": found.keys,
            "sample_duplicates": MetadataValue.json(found.sample),
            "window": f"{window.start.date()} .. {window.end.date()}",
        },
    )
    return _trip_on_failure(context, breaker, UNIQUE_CHECK, result, f"{found.keys} duplicate key(s)")


@asset_check(
    asset=CURATED_KEY,
    name=ACCOUNTING_CHECK,
    blocking=True,
    partitions_def=landing_batches,
    description=(
        "Every standardized row of the batch is accounted for: standardized rows = inserted + "
        "superseded + skipped as duplicates, and curated grew by exactly the inserted rows. Failed "
        "means rows were lost or doubled in the merge: the breaker trips. Recover as the metadata says."
    ),
)
def curated_row_accounting(
    context: AssetCheckExecutionContext, catalog: IcebergCatalogResource, breaker: CircuitBreakerResource
) -> AssetCheckResult:
    tables = catalog.tables()
    account = account_rows(tables["standardized"], tables["curated"], context.partition_key)
    metadata = {"batch_id": account.batch_id}
    if account.expired:
        metadata.update(already_merged=True, commit_expired=True)
    elif account.problem is not None:
        metadata["problem"] = account.problem
    else:
        metadata.update(
            standardized_rows=account.standardized_rows,
            inserted=account.inserted,
            superseded=account.superseded,
            skipped_duplicates=account.skipped,
            curated_net_new_rows=account.net_new_rows,
            curated_total_rows=account.total_after,
        )
    result = AssetCheckResult(passed=account.holds, severity=AssetCheckSeverity.ERROR, metadata=metadata)
    return _trip_on_failure(context, breaker, ACCOUNTING_CHECK, result, account.why())


@asset_check(
    asset=CURATED_KEY,
    name=FRESHNESS_CHECK,
    description=(
        "Every batch published to standardized reaches curated within `WAP_CURATED_MAX_LAG_MINUTES`. "
        "Failed means a batch is stuck between the layers: look for a failed run of its partition, then "
        "`wap-pipeline rerun-failed --partition KEY`. Runs with the operations job (every 5 minutes)."
    ),
)
def curated_freshness(
    context: AssetCheckExecutionContext, aws: AwsResource, catalog: IcebergCatalogResource
) -> AssetCheckResult:
    tables = catalog.tables()
    standardized, curated = tables["standardized"], tables["curated"]
    now = datetime.now(UTC)
    lag = curated_lag(standardized, curated, aws.batch_ids_after, now)
    head = curated.current_snapshot()
    max_lag_s = aws.settings().curated_max_lag_minutes * 60
    return AssetCheckResult(
        passed=lag.oldest_lag_s <= max_lag_s,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "pending_batches": len(lag.pending),
            "oldest_pending_lag_s": MetadataValue.float(round(lag.oldest_lag_s, 1)),
            "max_lag_s": max_lag_s,
            "last_commit_age_s": MetadataValue.float(
                round(now.timestamp() - head.timestamp_ms / 1000, 1) if head else 0.0
            ),
            "sample_pending": MetadataValue.json(lag.pending[:10]),
        },
    )
