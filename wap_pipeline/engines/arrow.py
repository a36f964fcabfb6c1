"""The default engine: PyIceberg + Arrow, in-process (see :mod:`wap_pipeline.engines`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from wap_pipeline.engines import conform
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import compaction, wap
from wap_pipeline.iceberg.filters import window_filter
from wap_pipeline.rules.curated import EVENT_TIME, KEY, DedupWindow, MergePlan


def day_chunks(
    rows: pa.Table, indices: pa.Array | None = None, max_bytes: int = wap.CHUNK_BYTES
) -> Iterator[pa.Table]:
    """The rows at ``indices`` (all rows by default), one event day at a time, in pieces of at most
    about ``max_bytes``.

    Curated is partitioned by day: PyIceberg splits what it writes by partition with a filtered copy
    per partition. Sorting the indices by day once and taking one bounded piece at a time keeps a
    single piece's copies in memory, never a copy of the whole batch.
    """
    if indices is None:
        indices = pa.array(np.arange(rows.num_rows, dtype=np.int64))
    if len(indices) == 0:
        return
    times = pc.cast(rows[EVENT_TIME].take(indices), pa.timestamp("us", tz="UTC"))
    days = pc.cast(times, pa.date32())
    order = pc.sort_indices(days)
    ordered = indices.take(order)
    day_values = pc.fill_null(pc.cast(days.take(order), pa.int32()), -(2**31)).to_numpy()
    starts = np.flatnonzero(np.r_[True, day_values[1:] != day_values[:-1]])
    ends = np.r_[starts[1:], len(day_values)]
    per_piece = max(1, int(max_bytes / max(1.0, rows.nbytes / max(1, rows.num_rows))))
    for start, end in zip(starts, ends, strict=True):
        for piece in range(start, end, per_piece):
            yield rows.take(ordered.slice(piece, min(per_piece, end - piece)))


class ArrowEngine:
    name = "arrow"

    def scan_batch(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> pa.Table:
        return conform(wap.scan_batch(table, ref, batch_id, selected_fields), table)

    def scan_batch_chunks(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> Iterator[pa.Table]:
        for chunk in wap.scan_batch_chunks(table, ref, batch_id, selected_fields):
            yield conform(chunk, table)

    def write_new_branch(
        self,
        table: Table,
        name: str,
        chunks: Iterable[pa.Table],
        properties: Callable[[], Mapping[str, str]],
    ) -> int:
        return wap.write_new_branch(table, name, chunks, properties)

    def fast_forward(self, table: Table, branch: str) -> Snapshot:
        return wap.fast_forward(table, branch)

    def scan_keys(
        self, table: Table, keys: pa.Array, window: DedupWindow, selected_fields: tuple[str, ...]
    ) -> pa.Table:
        # Two passes. PyIceberg re-binds an In predicate for every data file it plans, so pushing a
        # batch's thousands of keys down costs (files x keys); instead read only the key column of
        # the window (pruned to its day partitions) and match in Arrow, then fetch the full rows of
        # the few keys that are really there.
        in_window = table.scan(row_filter=window_filter(window), selected_fields=(KEY,)).to_arrow()[KEY]
        found = pc.unique(in_window.filter(pc.is_in(in_window, value_set=keys.cast(in_window.type))))
        if len(found) == 0:
            return conform(table.schema().as_arrow().empty_table().select(list(selected_fields)), table)
        row_filter = And(In(KEY, found.to_pylist()), window_filter(window))
        return conform(table.scan(row_filter=row_filter, selected_fields=selected_fields).to_arrow(), table)

    def commit_merge(
        self, table: Table, plan: MergePlan, window: DedupWindow | None, properties: dict[str, str]
    ) -> None:
        """Deletes of superseded keys (inside the window) and the inserts in one transaction: a crash
        commits nothing. The inserts' data files are written first, a day piece at a time."""
        with wap.StagedAppend(table) as staged:
            staged.write_all(day_chunks(plan.rows, plan.winner_rows))
            with table.transaction() as tx:
                if plan.superseded_keys:
                    superseded = And(In(KEY, plan.superseded_keys), window_filter(window))
                    tx.delete(superseded, snapshot_properties=properties)
                staged.commit(properties, transaction=tx)
                fault_point("curated.before_commit")

    def compact_days(self, table: Table, days: list[date], min_files: int) -> compaction.CompactionResult:
        return compaction.compact_days(table, days, min_files)
