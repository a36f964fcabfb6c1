"""The default engine: PyIceberg + Arrow, in-process (see :mod:`wap_pipeline.engines`)."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from wap_pipeline.engines import conform
from wap_pipeline.faults import fault_point
from wap_pipeline.iceberg import compaction, wap
from wap_pipeline.iceberg.filters import window_filter
from wap_pipeline.rules.curated import KEY, DedupWindow, MergePlan


class ArrowEngine:
    name = "arrow"

    def scan_batch(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> pa.Table:
        return conform(wap.scan_batch(table, ref, batch_id, selected_fields), table)

    def write_to_branch(self, table: Table, name: str, rows: pa.Table, properties: dict[str, str]) -> None:
        wap.write_to_branch(table, name, rows, properties)

    def fast_forward(self, table: Table, branch: str) -> Snapshot:
        return wap.fast_forward(table, branch)

    def scan_keys(
        self, table: Table, keys: list[str], window: DedupWindow, selected_fields: tuple[str, ...]
    ) -> pa.Table:
        # Two passes. PyIceberg re-binds an In predicate for every data file it plans, so pushing a
        # batch's thousands of keys down costs (files x keys); instead read only the key column of
        # the window (pruned to its day partitions) and match in Arrow, then fetch the full rows of
        # the few keys that are really there.
        in_window = table.scan(row_filter=window_filter(window), selected_fields=(KEY,)).to_arrow()[KEY]
        found = pc.unique(in_window.filter(pc.is_in(in_window, value_set=pa.array(keys, pa.string()))))
        if len(found) == 0:
            return conform(table.schema().as_arrow().empty_table().select(list(selected_fields)), table)
        row_filter = And(In(KEY, found.to_pylist()), window_filter(window))
        return conform(table.scan(row_filter=row_filter, selected_fields=selected_fields).to_arrow(), table)

    def commit_merge(
        self, table: Table, plan: MergePlan, window: DedupWindow | None, properties: dict[str, str]
    ) -> None:
        """Deletes of superseded keys (inside the window) and the inserts in one transaction: a crash
        commits nothing."""
        with table.transaction() as tx:
            if plan.superseded_keys:
                superseded = And(In(KEY, plan.superseded_keys), window_filter(window))
                tx.delete(superseded, snapshot_properties=properties)
            tx.append(plan.winners.cast(table.schema().as_arrow()), snapshot_properties=properties)
            fault_point("curated.before_commit")

    def compact_days(self, table: Table, days: list[date], min_files: int) -> compaction.CompactionResult:
        return compaction.compact_days(table, days, min_files)
