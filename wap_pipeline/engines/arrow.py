"""The default engine: PyIceberg + Arrow, in-process (see :mod:`wap_pipeline.engines`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from wap_pipeline.engines import MergeSummary, Standardization, StandardizedBatch, conform
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import compaction, wap
from wap_pipeline.iceberg.filters import window_filter
from wap_pipeline.iceberg.schemas import top_level_columns
from wap_pipeline.rules.audit import AUDIT_COLUMNS, AuditResult, count_invalid
from wap_pipeline.rules.curated import (
    DUPLICATES_SAMPLE,
    EVENT_TIME,
    KEY,
    PAYLOAD,
    TOTALS_COLUMNS,
    DedupWindow,
    DuplicateKeys,
    MergePlan,
    combine_key_counts,
    combine_totals,
    days_window,
    dedup_window,
    duplicates_of,
    event_days,
    key_counts,
    partial_totals,
    plan_merge,
)
from wap_pipeline.rules.replays import granted_tokens
from wap_pipeline.rules.standardize import Grants, SchemaMismatchError

# The curated columns the merge plan compares (and reads of curated's current rows).
CURRENT_COLUMNS = (KEY, "is_replay", EVENT_TIME, "sent_timestamp", PAYLOAD)


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

    def standardize_to_branch(
        self,
        raw: Table,
        table: Table,
        batch_id: str,
        branch: str,
        job: Standardization,
        quarantined: Collection[str],
        grants_of: Callable[[list[str]], Grants],
        properties: Callable[[int, int], Mapping[str, str]],
    ) -> StandardizedBatch:
        """A raw data file at a time: standardize, tag, write its data files; then the branch and one
        commit. A schema mismatch in any chunk is raised (naming every field of the batch) before the
        commit, so it leaves no branch."""
        skipped, unauthorized = 0, []
        errors: list[SchemaMismatchError] = []

        def chunks() -> Iterator[pa.Table]:
            nonlocal skipped
            for chunk in self.scan_batch_chunks(raw, wap.MAIN, batch_id):
                tokens = granted_tokens(chunk)
                try:
                    result = job.apply(chunk, quarantined, grants_of(tokens) if tokens else {})
                except SchemaMismatchError as error:
                    errors.append(error)
                    continue
                if errors:
                    continue  # the rest is only checked: the batch's error names every field
                skipped += result.skipped.num_rows
                unauthorized.append(result.unauthorized_replays)
                yield result.rows
            if errors:
                raise SchemaMismatchError.combine(errors)

        def unauthorized_count() -> int:
            return sum(t.num_rows for t in unauthorized)

        rows = self.write_new_branch(
            table, branch, chunks(), lambda: properties(skipped, unauthorized_count())
        )
        sample = pa.concat_tables(unauthorized).slice(0, 5).to_pylist() if unauthorized_count() else []
        return StandardizedBatch(rows, skipped, unauthorized_count(), sample)

    def audit_batch(self, table: Table, branch: str, batch_id: str) -> AuditResult:
        return count_invalid(self.scan_batch(table, branch, batch_id, AUDIT_COLUMNS))

    def merge_batch(
        self,
        standardized: Table,
        table: Table,
        batch_id: str,
        curated_at: datetime,
        window_days: int,
        properties: Callable[[MergeSummary], dict[str, str]],
    ) -> MergeSummary:
        """The batch read whole (the merge needs all its keys), the curated rows of its keys inside its
        window, :func:`plan_merge`, and :meth:`commit_merge`."""
        columns = top_level_columns(table.schema())
        kept = set(top_level_columns(standardized.schema()))
        batch = self.scan_batch(standardized, wap.MAIN, batch_id, tuple(c for c in columns if c in kept))
        standardized_rows = batch.num_rows
        stamp = pa.scalar(curated_at, pa.timestamp("us", tz="UTC"))
        incoming = batch.append_column("curated_at", pa.repeat(stamp, batch.num_rows)).select(columns)
        del batch
        window = dedup_window(incoming, window_days)
        keys = pc.unique(incoming[KEY])
        if table.current_snapshot() is not None and len(keys) and window is not None:
            current = self.scan_keys(table, keys, window, CURRENT_COLUMNS)
        else:
            current = incoming.schema.empty_table()
        plan = plan_merge(incoming, current)  # names the winners by row; commit_merge writes them
        del incoming, keys
        replaced = current.filter(pc.is_in(current[KEY], pa.array(plan.superseded_keys, pa.string())))
        touched = sorted(set(event_days(plan.winners_of([EVENT_TIME]))) | set(event_days(replaced)))
        summary = MergeSummary(
            standardized_rows, plan.inserted, plan.superseded, plan.skipped, touched, window, current.num_rows
        )
        self.commit_merge(table, plan, window, properties(summary))
        return summary

    def daily_totals(self, curated: Table, days: list[date]) -> pa.Table:
        """A data file of the days at a time: its partial totals folded into one running total, so
        memory follows a file and the groups, not the days' rows."""
        running = combine_totals([])
        for chunk in wap.scan_chunks(curated, window_filter(days_window(days)), TOTALS_COLUMNS):
            running = combine_totals([running, partial_totals(conform(chunk, curated))])
        return running

    def duplicate_keys(
        self, curated: Table, window: DedupWindow, sample_size: int = DUPLICATES_SAMPLE
    ) -> DuplicateKeys:
        """A data file of the window at a time: its key counts folded into running counts. Counting
        duplicates in one process needs every distinct key of the window (this engine is in-process by
        definition; the Spark engine counts on its executors), but never the window's rows, nor PyIceberg
        reading every file at once. The running counts are re-hashed only once the counts waiting
        reach their size: O(log files) passes over the keys, not one per file."""
        counts, pending = combine_key_counts([]), []
        for chunk in wap.scan_chunks(curated, window_filter(window), (KEY,)):
            pending.append(key_counts(chunk[KEY]))
            if sum(part.num_rows for part in pending) >= counts.num_rows:
                counts, pending = combine_key_counts([counts, *pending]), []
        return duplicates_of(combine_key_counts([counts, *pending]), sample_size)
