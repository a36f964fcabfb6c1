"""curated/daily_totals: events and amount per day, event_type and currency -- what finance reads.

Incremental: a batch recomputes only the days its curated commit touched (recorded in that commit's
summary, including the days of rows it superseded), from curated itself, and replaces those days in
one overwrite. Recomputing from curated makes it idempotent and independent of the order batches
finish in. Downstream of curated's blocking checks: a failed check keeps wrong totals from publishing.

The totals are computed by the engine (``WAP_ENGINE``) without holding the days' rows: the arrow engine
folds a data file at a time into running partial sums, the Spark engine groups on its executors. The
driver holds one row per (day, event_type, currency), whatever the batch or the days' size.

Nothing reads this table's history (it is recomputed, never replayed), so it keeps only its newest
``DAILY_TOTALS_SNAPSHOTS_KEPT`` snapshots: otherwise every batch's overwrite would make the next one
slower (PyIceberg copies the whole table metadata, every snapshot included, several times per commit).
"""

from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, AssetKey, Failure, MaterializeResult, MetadataValue, asset
from pyiceberg.expressions import In

from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.assets.curated import CURATED_KEY, TOUCHED_DAYS, curated_commit_summary
from wap_pipeline.iceberg import wap
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import AwsResource, CircuitBreakerResource, EngineResource, IcebergCatalogResource
from wap_pipeline.retry_policy import transient_retry_policy
from wap_pipeline.rules.curated import final_totals

DAILY_TOTALS_KEY = AssetKey(["curated", "daily_totals"])
DAILY_TOTALS_SNAPSHOTS_KEPT = 10


@asset(
    key=DAILY_TOTALS_KEY,
    deps=[CURATED_KEY],
    partitions_def=landing_batches,
    retry_policy=transient_retry_policy(),
    group_name="curated",
    owners=["team:finance-analytics"],
    kinds={"iceberg"},
    description=(
        "Events and amount_minor per UTC day of event, event_type and currency, from curated/events. "
        "Each batch recomputes only the days it touched."
    ),
)
def curated_daily_totals(
    context: AssetExecutionContext,
    aws: AwsResource,
    catalog: IcebergCatalogResource,
    breaker: CircuitBreakerResource,
    engine: EngineResource,
) -> MaterializeResult:
    batch_id = wap.validate_batch_id(context.partition_key)
    with guarded_by_breaker(context, breaker), catalog.writing(context, "daily_totals") as tables:
        curated, totals_table = tables["curated"], tables["daily_totals"]
        # Recomputed by every batch: a table trimmed before it carried a ledger starts one (lost_ok).
        if batch_id in wap.ledger(totals_table, lost_ok=True):
            context.log.info(f"batch {batch_id}'s days are already recomputed; no-op")
            return MaterializeResult(metadata={"batch_id": batch_id, "already_recomputed": True})
        summary = curated_commit_summary(curated, batch_id)
        if summary is None:
            raise Failure(f"batch {batch_id} is not merged into curated/events; totals cannot be computed")
        days = [date.fromisoformat(d) for d in summary.get(TOUCHED_DAYS, "").split(",") if d]
        ledger = wap.ledger_properties(totals_table, batch_id, aws.batch_ids_after, lost_ok=True)
        if not days:
            # Nothing to recompute, but the batch is done here: an empty commit records it in the ledger.
            totals_table.append(
                totals_table.schema().as_arrow().empty_table(),
                snapshot_properties={wap.BATCH_ID_PROPERTY: batch_id, **ledger},
            )
            return MaterializeResult(metadata={"batch_id": batch_id, "days_recomputed": 0})
        partial = engine.get().daily_totals(curated, days)  # one row per group, never the rows
        rows_read = int(pc.sum(partial["events"]).as_py() or 0)
        # Checked (int64) only for the days written: a day in between that is not recomputed is not ours.
        totals = final_totals(partial.filter(pc.is_in(partial["event_date"], pa.array(days, pa.date32()))))
        totals_table.overwrite(
            totals.cast(totals_table.schema().as_arrow()),
            overwrite_filter=In("event_date", [d.isoformat() for d in days]),
            snapshot_properties={wap.BATCH_ID_PROPERTY: batch_id, **ledger},
        )
        expired = wap.expire_history(totals_table, DAILY_TOTALS_SNAPSHOTS_KEPT)
        return MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "days_recomputed": len(days),
                "days": MetadataValue.json([d.isoformat() for d in days]),
                "curated_rows_read": rows_read,
                "events": int(pc.sum(totals["events"]).as_py() or 0),
                # Python's int: the days' totals each fit int64, their sum need not.
                "amount_minor": sum(totals["amount_minor"].to_pylist()),
                "snapshots_expired": len(expired),
            }
        )
