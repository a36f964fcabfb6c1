"""curated/events: one row per idempotency_key, one atomic Iceberg commit per batch.

Reads the batch's published rows from standardized main, plans the merge (see
:mod:`wap_pipeline.rules.curated`) against the curated rows of the keys it touches, and commits the
deletes of superseded rows and the inserts in a single transaction: a crash commits nothing.
"""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, AssetKey, Failure, MaterializeResult, asset

from wap_pipeline.assets.common import guarded_by_breaker, transient_retry_policy
from wap_pipeline.assets.standardized import STANDARDIZED_KEY
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import top_level_columns
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import CircuitBreakerResource, EngineResource, IcebergCatalogResource
from wap_pipeline.rules.curated import KEY, plan_merge

CURATED_KEY = AssetKey(["curated", "events"])


@asset(
    key=CURATED_KEY,
    deps=[STANDARDIZED_KEY],
    partitions_def=landing_batches,
    retry_policy=transient_retry_policy(),
    group_name="curated",
    owners=["team:data-platform"],
    kinds={"iceberg"},
    description=(
        "One row per idempotency_key: a replay supersedes the original, otherwise the latest "
        "event_timestamp wins. Each batch is one atomic commit."
    ),
)
def curated_events(
    context: AssetExecutionContext,
    catalog: IcebergCatalogResource,
    breaker: CircuitBreakerResource,
    engine: EngineResource,
) -> MaterializeResult:
    batch_id = wap.validate_batch_id(context.partition_key)
    with guarded_by_breaker(context, breaker):
        tables = catalog.tables()
        standardized, table = tables["standardized"], tables["curated"]
        io = engine.get()  # arrow or spark: reads and the atomic commit (wap_pipeline.engines)
        done = wap.published_snapshot(table, batch_id)
        if done is not None:
            context.log.info(
                f"batch {batch_id} already merged into curated (snapshot {done.snapshot_id}); no-op"
            )
            return MaterializeResult(metadata={"batch_id": batch_id, "already_merged": True})
        if wap.published_snapshot(standardized, batch_id) is None:
            raise Failure(f"batch {batch_id} is not published in standardized; it cannot be curated")
        columns = top_level_columns(table.schema())
        batch = io.scan_batch(standardized, wap.MAIN, batch_id)
        now = datetime.now(UTC)
        incoming = batch.append_column(
            "curated_at", pa.array([now] * batch.num_rows, pa.timestamp("us", tz="UTC"))
        )
        incoming = incoming.select(columns)
        keys = pc.unique(incoming[KEY]).to_pylist()
        if table.current_snapshot() is not None and keys:
            current = io.scan_keys(table, keys, (KEY, "is_replay", "event_timestamp", "sent_timestamp"))
        else:
            current = incoming.schema.empty_table()
        plan = plan_merge(incoming, current)
        properties = {wap.BATCH_ID_PROPERTY: batch_id}
        io.commit_merge(table, plan, properties)  # deletes + inserts, one atomic step on main
        return MaterializeResult(
            metadata={
                "batch_id": batch_id,
                "standardized_rows": batch.num_rows,
                "inserted": plan.inserted,
                "superseded": plan.superseded,
                "skipped_duplicates": plan.skipped,
                "accounting_holds": plan.accounted == batch.num_rows,
            }
        )
