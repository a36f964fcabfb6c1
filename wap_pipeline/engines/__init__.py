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

* ``arrow`` (default): PyIceberg + Arrow in-process (:mod:`wap_pipeline.engines.arrow`).
* ``spark``: a SparkSession from dagster-pyspark's ``PySparkResource`` with Iceberg's Spark runtime,
  on the same catalog (:mod:`wap_pipeline.engines.spark`). Needs the ``spark`` extra.

Branch bookkeeping (naming, creation from main's head, abandonment, "already published?") is
catalog metadata and stays in :mod:`wap_pipeline.iceberg.wap` for both engines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from typing import Protocol

import pyarrow as pa
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from wap_pipeline.iceberg.compaction import CompactionResult
from wap_pipeline.rules.curated import DedupWindow, MergePlan
from wap_pipeline.settings import ENGINES, Settings


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


def resolve_engine(configured: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``WAP_ENGINE`` when set, else the resource's configured engine, else the default (arrow)."""
    env = os.environ if environ is None else environ
    if env.get("WAP_ENGINE"):
        return Settings.from_env(env).engine
    name = configured or Settings.engine
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")
    return name


def conform(rows: pa.Table, table: Table) -> pa.Table:
    """Cast primitive columns to the table's Arrow types.

    What a scan returns depends on who wrote the data files: PyIceberg reads a file Spark wrote as
    ``string`` where its own files give ``large_string``, and Arrow refuses to join the two. Every
    engine conforms what it reads, so the rules always see one set of types, whoever wrote the rows.
    """
    target = table.schema().as_arrow()
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
