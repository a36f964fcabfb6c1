"""Recompute the daily totals of the days a curated batch touched. No Dagster here: the asset
translates the outcome.

Incremental: a batch recomputes only the days its curated commit touched (recorded in that commit's
summary, including the days of rows it superseded), from curated itself, and replaces those days in
one overwrite. Recomputing from curated makes it idempotent and independent of the order batches
finish in. The engine computes the totals without holding the days' rows (one row per day,
event_type and currency comes back).

Nothing reads the totals' history (they are recomputed, never replayed), so the table keeps only its
newest ``SNAPSHOTS_KEPT`` snapshots: otherwise every batch's overwrite would make the next one slower
(PyIceberg copies the whole table metadata, every snapshot included, several times per commit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import In
from pyiceberg.table import Table

from wap_pipeline.application.curated import curated_commit_summary
from wap_pipeline.engines import Engine
from wap_pipeline.iceberg import wap
from wap_pipeline.rules.curated import final_totals

SNAPSHOTS_KEPT = 10


class NotInCuratedError(RuntimeError):
    """The batch is not merged into curated: its totals cannot be computed yet."""


@dataclass(frozen=True)
class TotalsPorts:
    engine: Engine
    curated: Table
    totals: Table
    batch_ids_after: Callable[[str], list[str]]


@dataclass(frozen=True)
class AlreadyRecomputed:
    batch_id: str


@dataclass(frozen=True)
class Recomputed:
    batch_id: str
    days: list[date]
    rows_read: int
    totals: pa.Table
    """The rows written (empty when the batch touched no day)."""
    snapshots_expired: int


def recompute_days(ports: TotalsPorts, batch_id: str) -> AlreadyRecomputed | Recomputed:
    """Raises :class:`NotInCuratedError`; ``rules.curated.TotalsOverflowError`` when a day's amount
    does not fit int64 (nothing is written then)."""
    curated, table = ports.curated, ports.totals
    # Recomputed by every batch: a table trimmed before it carried a ledger starts one (lost_ok).
    if batch_id in wap.ledger(table, lost_ok=True):
        return AlreadyRecomputed(batch_id)
    summary = curated_commit_summary(curated, batch_id)
    if summary is None:
        raise NotInCuratedError(
            f"batch {batch_id} is not merged into curated/events; totals cannot be computed"
        )
    touched = summary.get(wap.CURATED_TOUCHED_DAYS, "")
    days = [date.fromisoformat(day) for day in touched.split(",") if day]
    properties = {
        wap.BATCH_ID_PROPERTY: batch_id,
        **wap.ledger_properties(table, batch_id, ports.batch_ids_after, lost_ok=True),
    }
    empty = table.schema().as_arrow().empty_table()
    if not days:
        # Nothing to recompute, but the batch is done here: an empty commit records it in the ledger.
        table.append(empty, snapshot_properties=properties)
        return Recomputed(batch_id, [], 0, empty, 0)
    partial = ports.engine.daily_totals(curated, days)  # one row per group, never the rows
    rows_read = int(pc.sum(partial["events"]).as_py() or 0)
    # Checked (int64) only for the days written: a day in between that is not recomputed is not ours.
    totals = final_totals(partial.filter(pc.is_in(partial["event_date"], pa.array(days, pa.date32()))))
    table.overwrite(
        totals.cast(empty.schema),
        overwrite_filter=In("event_date", [day.isoformat() for day in days]),
        snapshot_properties=properties,
    )
    expired = wap.expire_history(table, SNAPSHOTS_KEPT)
    return Recomputed(batch_id, days, rows_read, totals, len(expired))
