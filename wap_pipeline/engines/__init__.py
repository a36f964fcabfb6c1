"""Engines: how the standardized and curated layers read, write and publish their data.

The domain rules (standardization, CDE audit, quarantine filter, curated precedence) are Arrow
functions in :mod:`wap_pipeline.rules` and are the same for every engine; an engine only does the
I/O around them. Each engine has the same methods, named after :mod:`wap_pipeline.iceberg.wap`:

``scan_batch(table, ref, batch_id, selected_fields)``   the rows of one batch on a ref, as Arrow
``scan_batch_chunks(table, ref, batch_id, fields)``     the same rows as a sequence of Arrow tables
                                                        (bounded memory where the engine can stream)
``write_new_branch(table, branch, chunks, properties)`` write Arrow chunks, then create the branch at
                                                        main's head and commit them to it in ONE
                                                        snapshot with ``properties()`` in its summary
                                                        (a chunk that raises leaves no branch)
``fast_forward(table, branch)``                         move main to the branch head, only if that is
                                                        a fast-forward (else NotFastForwardError)
``scan_keys(table, keys, window, selected_fields)``     main's rows whose idempotency_key is in keys and
                                                        event_timestamp in the dedup window
``commit_merge(table, plan, window, properties)``       the curated commit of a MergePlan (superseded
                                                        rows deleted inside the window), atomic on main
``compact_days(table, days, min_files)``                rewrite each of ``days`` holding >= min_files
                                                        small files into few files, rows unchanged, in
                                                        one commit with no batch id

and the three steps of a batch the assets call, each made of the rules and the methods above:

``standardize_to_branch(raw, table, batch_id, branch,   standardize + tag the batch's raw rows with
  job, quarantined, grants_of, properties)``            ``job`` (a :class:`Standardization`) and write
                                                        them to a new branch in one commit
``audit_batch(table, branch, batch_id)``                the audit (:func:`rules.audit.count_invalid`)
                                                        of the batch's rows on the branch
``merge_batch(standardized, table, batch_id,            plan the curated merge of the batch
  curated_at, window_days, properties)``                (:func:`rules.curated.plan_merge`) and commit it
``daily_totals(curated, days)``                         the partial totals (:func:`rules.curated.
                                                        partial_totals`, combined) of curated's rows
                                                        on the whole days from min(days) to max(days)
``duplicate_keys(curated, window)``                     the idempotency keys that occur more than once
                                                        in curated's main inside the window (count and
                                                        a bounded sample: :class:`rules.curated.
                                                        DuplicateKeys`), for the uniqueness check

The arrow engine runs them in-process, a data file at a time. The Spark engine runs the same rule
functions on Spark's executors (``mapInArrow``) and brings only counts and bounded samples to the driver.

* ``arrow`` (default): PyIceberg + Arrow in-process (:mod:`wap_pipeline.engines.arrow`).
* ``spark``: a SparkSession from dagster-pyspark's ``PySparkResource`` with Iceberg's Spark runtime,
  on the same catalog (:mod:`wap_pipeline.engines.spark`). Needs the ``spark`` extra.

Branch bookkeeping (naming, creation from main's head, abandonment, "already published?") is
catalog metadata and stays in :mod:`wap_pipeline.iceberg.wap` for both engines.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

import pyarrow as pa
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from wap_pipeline.iceberg.compaction import CompactionResult
from wap_pipeline.rules.audit import AuditResult, tag_invalid
from wap_pipeline.rules.curated import DUPLICATES_SAMPLE, DedupWindow, DuplicateKeys, MergePlan
from wap_pipeline.rules.standardize import Grants, StandardizeResult, standardize
from wap_pipeline.settings import ENGINES


@dataclass(frozen=True)
class Standardization:
    """How one batch's raw rows become standardized rows: parse (with the quarantine filter and the
    replay grants), then tag CDE violations, then the table's columns. Plain data, so that Spark can
    ship it to its executors; every engine applies it to chunks of raw rows (every step is row-local)."""

    fields: dict[str, object]
    """The producer fields of the standardized table (:func:`iceberg.schemas.payload_fields`)."""
    columns: tuple[str, ...]
    """The standardized table's top-level columns, in order."""
    standardized_at: datetime
    reference: datetime
    """The batch's reference time (when it landed): what the audit rules compare with."""

    def apply(self, raw: pa.Table, quarantined: Collection[str], grants: Grants) -> StandardizeResult:
        result = standardize(raw, self.fields, self.standardized_at, quarantined, grants)
        rows = tag_invalid(result.rows, self.reference).select(list(self.columns))
        return StandardizeResult(rows, result.skipped, result.unauthorized_replays)


@dataclass(frozen=True)
class StandardizedBatch:
    """What :meth:`Engine.standardize_to_branch` wrote, and what it set aside."""

    rows: int
    skipped: int
    """Raw rows masked by the quarantine."""
    unauthorized_replays: int
    """Rows that claim to be replays without data-patcher's grant."""
    unauthorized_sample: list[dict]
    """Lineage of a few of them (at most 5), for the log."""


@dataclass(frozen=True)
class MergeSummary:
    """The accounting of one batch's curated merge (it goes into the commit's snapshot summary)."""

    standardized_rows: int
    inserted: int
    superseded: int
    skipped: int
    touched_days: list[date]
    """Days of event_timestamp the commit writes or deletes in."""
    window: DedupWindow | None
    looked_up: int
    """Curated rows found for the batch's keys inside the window."""


class Engine(Protocol):
    name: str

    def scan_batch(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> pa.Table: ...

    def scan_batch_chunks(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> Iterator[pa.Table]: ...

    def write_new_branch(
        self,
        table: Table,
        name: str,
        chunks: Iterable[pa.Table],
        properties: Callable[[], Mapping[str, str]],
    ) -> int: ...

    def fast_forward(self, table: Table, branch: str) -> Snapshot: ...

    def scan_keys(
        self, table: Table, keys: pa.Array, window: DedupWindow, selected_fields: tuple[str, ...]
    ) -> pa.Table: ...

    def commit_merge(
        self, table: Table, plan: MergePlan, window: DedupWindow | None, properties: dict[str, str]
    ) -> None: ...

    def compact_days(self, table: Table, days: list[date], min_files: int) -> CompactionResult: ...

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
        """Raises :class:`rules.standardize.SchemaMismatchError` (naming every field of the batch) and
        then writes nothing. ``properties(skipped, unauthorized_replays)`` is asked after the rows are
        standardized, before the commit."""
        ...

    def audit_batch(self, table: Table, branch: str, batch_id: str) -> AuditResult: ...

    def merge_batch(
        self,
        standardized: Table,
        table: Table,
        batch_id: str,
        curated_at: datetime,
        window_days: int,
        properties: Callable[[MergeSummary], dict[str, str]],
    ) -> MergeSummary:
        """``properties(summary)`` is asked once the plan is made, before the commit."""
        ...

    def daily_totals(self, curated: Table, days: list[date]) -> pa.Table:
        """:data:`rules.curated.PARTIAL_TOTALS_SCHEMA` per group of curated's main on the days from the
        earliest to the latest of ``days`` (not empty), combined but not yet checked: the caller keeps
        the days it wants and ends with :func:`rules.curated.final_totals`. Never holds the days' rows
        whole: it grows with the groups, not with the rows."""
        ...

    def duplicate_keys(
        self, curated: Table, window: DedupWindow, sample_size: int = DUPLICATES_SAMPLE
    ) -> DuplicateKeys:
        """:func:`rules.curated.duplicate_keys` of the keys of curated's main inside ``window``, without
        holding the window's rows: the driver gets counts and ``sample_size`` keys at most."""
        ...


def resolve_engine(name: str) -> str:
    """``name``, checked: an engine this project has."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")
    return name


def conform(rows: pa.Table, table: Table) -> pa.Table:
    """:func:`conform_to` the table's Arrow schema."""
    return conform_to(rows, table.schema().as_arrow())


def conform_to(rows: pa.Table, target: pa.Schema) -> pa.Table:
    """Cast primitive columns to the table's Arrow types.

    What a scan returns depends on who wrote the data files: PyIceberg reads a file Spark wrote as
    ``string`` where its own files give ``large_string``, and Arrow refuses to join the two. Every
    engine conforms what it reads, so the rules always see one set of types, whoever wrote the rows.
    """
    columns = []
    for name in rows.column_names:
        column = rows[name]
        index = target.get_field_index(name)
        if index >= 0:
            wanted = target.field(index).type
            if not pa.types.is_nested(wanted) and column.type != wanted:
                column = column.cast(wanted)
        columns.append(column)
    return pa.table(columns, names=rows.column_names)
