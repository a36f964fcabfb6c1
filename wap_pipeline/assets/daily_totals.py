"""curated/daily_totals: events and amount per day, event_type and currency -- what finance reads.

Each batch recomputes only the days its curated commit touched, from curated itself
(:func:`wap_pipeline.application.daily_totals.recompute_days`): idempotent and independent of the order
batches finish in. Downstream of curated's blocking checks: a failed check keeps wrong totals from
publishing. The engine computes the totals without holding the days' rows.
"""

import pyarrow.compute as pc
from dagster import AssetExecutionContext, AssetKey, Failure, MaterializeResult, MetadataValue, asset

from wap_pipeline.application.daily_totals import (
    AlreadyRecomputed,
    NotInCuratedError,
    TotalsPorts,
    recompute_days,
)
from wap_pipeline.assets.common import guarded_by_breaker
from wap_pipeline.assets.curated import CURATED_KEY
from wap_pipeline.iceberg import wap
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import AwsResource, CircuitBreakerResource, EngineResource, IcebergCatalogResource

DAILY_TOTALS_KEY = AssetKey(["curated", "daily_totals"])


@asset(
    key=DAILY_TOTALS_KEY,
    deps=[CURATED_KEY],
    partitions_def=landing_batches,
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
        ports = TotalsPorts(engine.get(), tables["curated"], tables["daily_totals"], aws.batch_ids_after)
        try:
            outcome = recompute_days(ports, batch_id)
        except NotInCuratedError as error:
            raise Failure(str(error)) from error
        if isinstance(outcome, AlreadyRecomputed):
            context.log.info(f"batch {batch_id}'s days are already recomputed; no-op")
            return MaterializeResult(metadata={"batch_id": batch_id, "already_recomputed": True})
        if not outcome.days:
            return MaterializeResult(metadata={"batch_id": batch_id, "days_recomputed": 0})
        totals = outcome.totals
        return MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "days_recomputed": len(outcome.days),
                "days": MetadataValue.json([d.isoformat() for d in outcome.days]),
                "curated_rows_read": outcome.rows_read,
                "events": int(pc.sum(totals["events"]).as_py() or 0),
                # Python's int: the days' totals each fit int64, their sum need not.
                "amount_minor": sum(totals["amount_minor"].to_pylist()),
                "snapshots_expired": outcome.snapshots_expired,
            }
        )
