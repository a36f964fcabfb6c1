"""Compaction of curated's day partitions, so that a batch's cost does not grow with history.

Every curated commit adds at least one data file to each day it touches. A day that keeps receiving
batches (late events, a busy day, a backfill) therefore accumulates one small file per batch, and
everything that reads the day -- the key lookup of the next batch, the uniqueness check, the daily
totals -- opens each of them: per-file cost (planning, footer reads, predicate binding) grows with the
number of batches, not with the data. Compacting the days a batch touched bounds that count: files
are grouped in size tiers (``size_tier``), and a tier holding ``min_files`` files is rewritten.

A compaction commit rewrites files without changing a row: it reads the files of the tier, writes the
same rows into as few files as the table's target size allows, and replaces the old files
with the new ones in ONE snapshot (the same copy-on-write overwrite PyIceberg's own ``delete`` uses).
It never carries a batch id (``wap.batch-id``), so the batch bookkeeping -- "already merged?", the
row accounting of the batch's own commit, ``wap-pipeline status`` -- does not see it; it records
``wap.compaction`` and the days instead. The row count is verified before committing: if the files
written do not hold exactly the rows read, nothing is committed.

It runs inside the curated step, right after the batch's merge commit: the same single writer (one
pipeline run at a time, and the step holds the table's writer lease), so it never races a merge.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.utils.properties import property_as_int

from wap_pipeline.iceberg.filters import window_filter
from wap_pipeline.rules.curated import days_window

# Marker of a compaction commit in the snapshot summary (value: the compacted days, comma-separated).
COMPACTION_PROPERTY = "wap.compaction"
# Iceberg's rewrite_data_files rewrites files below 75 % of the target size (min-file-size-bytes).
SMALL_FILE_SHARE = 0.75
# Files below this size are one tier (a batch's file in a quiet hour can be a few KB).
TIER_FLOOR_BYTES = 1 << 20
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction did: the days rewritten and the file counts before and after."""

    days: list[date] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0
    rows: int = 0


def _day_of(task: FileScanTask) -> date | None:
    """The day partition of a data file (curated is partitioned by ``day(event_timestamp)``)."""
    value = task.file.partition[0] if len(task.file.partition) else None
    return _EPOCH + timedelta(days=value) if isinstance(value, int) else None


def all_days(table: Table) -> list[date]:
    """Every day partition with data on main (what a maintenance pass compacts)."""
    if table.current_snapshot() is None:
        return []
    return sorted({day for task in table.scan().plan_files() if (day := _day_of(task)) is not None})


def small_files_by_day(table: Table, days: list[date]) -> dict[date, list[FileScanTask]]:
    """Main's data files of ``days`` smaller than the compaction threshold, by day.

    Days whose files carry delete files (merge-on-read deletes, which Spark can write) are left out:
    rewriting them would have to apply and then drop the deletes.
    """
    if not days or table.current_snapshot() is None:
        return {}
    target = property_as_int(
        table.metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    wanted = set(days)
    found: dict[date, list[FileScanTask]] = defaultdict(list)
    with_deletes: set[date] = set()
    for task in table.scan(row_filter=window_filter(days_window(days))).plan_files():
        day = _day_of(task)
        if day not in wanted or task.file.content != DataFileContent.DATA:
            continue
        if task.delete_files:
            with_deletes.add(day)
        elif task.file.file_size_in_bytes < SMALL_FILE_SHARE * target:
            found[day].append(task)
    return {day: tasks for day, tasks in found.items() if day not in with_deletes}


def size_tier(size_bytes: int, fanout: int) -> int:
    """0 below ``TIER_FLOOR_BYTES``, then one tier per factor ``fanout`` of size.

    Compacting ``fanout`` files of tier k gives a file of tier k + 1 or more, so a row is rewritten
    about once per tier (a handful of times) however many batches its day receives, and a day holds
    fewer than ``fanout`` files per tier.
    """
    tier, bound = 0, TIER_FLOOR_BYTES
    while size_bytes >= bound:
        tier, bound = tier + 1, bound * max(fanout, 2)
    return tier


def plan_compaction(table: Table, days: list[date], min_files: int) -> dict[date, list[list[FileScanTask]]]:
    """The groups of files to rewrite, by day: each tier of a day's small files that holds at least
    ``min_files`` files (size-tiered, as in an LSM tree).

    Not simply every small file of the day (Iceberg's bin-pack): a day that receives a batch every few
    minutes would then have its whole content rewritten every ``min_files`` batches, a cost that grows
    with the day's history. Tiering bounds both the files a lookup opens and the rewrite cost per batch.
    """
    if min_files < 2:
        return {}
    plan: dict[date, list[list[FileScanTask]]] = {}
    for day, tasks in small_files_by_day(table, days).items():
        tiers: dict[int, list[FileScanTask]] = defaultdict(list)
        for task in tasks:
            tiers[size_tier(task.file.file_size_in_bytes, min_files)].append(task)
        groups = [group for _, group in sorted(tiers.items()) if len(group) >= min_files]
        if groups:
            plan[day] = groups
    return plan


def compact_days(table: Table, days: list[date], min_files: int) -> CompactionResult:
    """Rewrite, in each of ``days``, every size tier holding at least ``min_files`` small files into
    as few files as the target size allows, all in one snapshot; rows and keys are unchanged.

    ``min_files`` < 2 disables compaction. Returns what was compacted (nothing: an empty result).
    """
    if min_files < 2:
        return CompactionResult()
    table.refresh()
    plan = plan_compaction(table, days, min_files)
    if not plan:
        return CompactionResult()
    metadata, io = table.metadata, table.io
    files_before = files_after = rows = 0
    counter = itertools.count(0)  # one file-name sequence for every group of the commit
    with table.transaction() as tx:
        properties = {COMPACTION_PROPERTY: ",".join(d.isoformat() for d in sorted(plan))}
        with tx.update_snapshot(snapshot_properties=properties).overwrite() as rewrite:
            for day in sorted(plan):
                for tasks in plan[day]:
                    expected = sum(task.file.record_count for task in tasks)
                    data = ArrowScan(
                        table_metadata=metadata,
                        io=io,
                        projected_schema=metadata.schema(),
                        row_filter=AlwaysTrue(),
                    ).to_table(tasks=tasks)
                    written = list(
                        _dataframe_to_data_files(
                            table_metadata=metadata,
                            df=data,
                            io=io,
                            write_uuid=rewrite.commit_uuid,
                            counter=counter,
                        )
                    )
                    if data.num_rows != expected or sum(f.record_count for f in written) != expected:
                        raise RuntimeError(
                            f"compaction of curated day {day} read {data.num_rows} rows and wrote "
                            f"{sum(f.record_count for f in written)}, the files hold {expected}: "
                            "not committed"
                        )
                    for task in tasks:
                        rewrite.delete_data_file(task.file)
                    for data_file in written:
                        rewrite.append_data_file(data_file)
                    files_before, files_after, rows = (
                        files_before + len(tasks),
                        files_after + len(written),
                        rows + expected,
                    )
    return CompactionResult(sorted(plan), files_before, files_after, rows)
