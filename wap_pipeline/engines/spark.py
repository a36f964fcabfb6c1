"""The Spark engine: Spark does the Iceberg I/O and the distribution, the Arrow rules do the thinking.

A SparkSession is built once per process by dagster-pyspark's ``PySparkResource`` with Iceberg's
Spark runtime (``iceberg-spark-runtime-3.5_2.12-1.10.2.jar``, shipped by the PyPI package
``snowpark-connect-deps-iceberg==1.0.2``) and its SQL extensions. Its Iceberg catalog is the SAME
catalog PyIceberg uses, under the same name (``WAP_CATALOG_NAME``): a PyIceberg ``SqlCatalog`` is read
through Iceberg's JDBC catalog (SQLite or PostgreSQL, drivers from Debian -- ``scripts/ensure-spark.sh``),
with ``jdbc.init-catalog-tables=false`` (else the JVM holds a SQLite lock and PyIceberg commits fail)
and ``cache-enabled=false`` (every statement sees the latest commit, whoever made it).

What runs where:

* a batch's steps (:meth:`SparkEngine.standardize_to_branch`, :meth:`~SparkEngine.audit_batch`,
  :meth:`~SparkEngine.merge_batch`) run the Arrow functions of :mod:`wap_pipeline.rules` -- one
  definition for both engines -- on the executors, with ``mapInArrow`` over Spark scans (curated
  precedence per hash partition of ``idempotency_key``); the counts are Spark aggregations, and the
  driver receives counts and bounded samples only, never the batch. The daily totals
  (:meth:`~SparkEngine.daily_totals`) are a Spark ``groupBy``: the driver receives one row per group;
  so is curated's uniqueness check (:meth:`~SparkEngine.duplicate_keys`): two counts and a few keys.
  The master is ``WAP_SPARK_MASTER`` (``local[*]`` by default);
* the lower-level reads (``scan_batch``, ``scan_keys``: tests and tools) are Spark scans collected as Arrow;
* writes are Spark writes: ``writeTo(<table>.branch_<name>)`` with ``snapshot-property.*`` options
  (the batch id and bookmark land in the snapshot summary exactly as the arrow engine writes them);
  each Spark commit is fenced by the step's writer lease first (:func:`wap_pipeline.iceberg.lease.fence`),
  and an append carries its token (``wap.writer-token``) like every PyIceberg commit;
* publish is ``CALL <catalog>.system.fast_forward``: Iceberg refuses it unless main's head is an
  ancestor of the branch head, and commits it with the catalog's compare-and-swap -- the same safety as
  :func:`wap_pipeline.iceberg.wap.fast_forward`. A refusal is raised as ``NotFastForwardError``.

The curated commit on Spark is made on a work branch ``curated_merge_<batch>`` (delete superseded
keys, append the winners with the batch id in the summary) and published to main by one fast-forward,
so main still moves in one atomic step per batch; the work branch is then removed.

One SparkContext per process. A session per catalog configuration (``newSession()``, which shares the
context) lets one process -- a test session -- use several catalogs.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from wap_pipeline.engines import MergeSummary, Standardization, StandardizedBatch, conform, conform_to
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import compaction, lease, wap
from wap_pipeline.iceberg.catalog import configured_properties, default_catalog_properties
from wap_pipeline.iceberg.schemas import top_level_columns
from wap_pipeline.rules.audit import AUDIT_COLUMNS, AuditResult, reason_counts, sample_ids
from wap_pipeline.rules.curated import (
    DUPLICATES_SAMPLE,
    EVENT_TIME,
    KEY,
    PAYLOAD,
    DedupWindow,
    DuplicateKeys,
    MergePlan,
    combine_totals,
    days_window,
    plan_merge,
    window_between,
)
from wap_pipeline.rules.replays import REPLAY_TOKEN
from wap_pipeline.rules.standardize import Grants, SchemaMismatchError
from wap_pipeline.settings import Settings

ICEBERG_RUNTIME_GLOB = "iceberg-spark-runtime-3.5_2.12-*.jar"
JDBC_DRIVER_JARS = ("/usr/share/java/sqlite-jdbc.jar", "/usr/share/java/postgresql.jar")
CURATED_WORK_BRANCH_PREFIX = "curated_merge_"


class SparkEngineUnavailable(RuntimeError):
    """The Spark engine was selected but its runtime is not installed."""


def iceberg_runtime_jar() -> str:
    """The Iceberg Spark runtime jar shipped by ``snowpark-connect-deps-iceberg`` (the spark extra)."""
    try:
        import snowpark_connect_deps_iceberg
    except ImportError as error:
        raise SparkEngineUnavailable(
            "WAP_ENGINE=spark needs the spark extra: pip install -c constraints.txt -e '.[spark]' "
            "(make install-spark) and scripts/ensure-spark.sh"
        ) from error
    folder = Path(snowpark_connect_deps_iceberg.__file__).parent / "jars"
    found = sorted(glob.glob(str(folder / ICEBERG_RUNTIME_GLOB)))
    if not found:
        raise SparkEngineUnavailable(f"no {ICEBERG_RUNTIME_GLOB} under {folder}")
    return found[-1]


def runtime_jars() -> list[str]:
    missing = [jar for jar in JDBC_DRIVER_JARS if not os.path.exists(jar)]
    if missing:
        raise SparkEngineUnavailable(
            f"missing JDBC driver(s) {', '.join(missing)}: run scripts/ensure-spark.sh"
        )
    return [iceberg_runtime_jar(), *JDBC_DRIVER_JARS]


def base_spark_config(with_jars: bool = True, master: str | None = None) -> dict[str, str]:
    """Everything but the catalog: the master (``WAP_SPARK_MASTER``), jars, Iceberg's SQL extensions,
    UTC, Arrow transfers, a quiet run.

    ``with_jars=False`` where the platform brings Iceberg itself (Glue's ``--datalake-formats iceberg``).
    ``spark.jars`` also ships the jars to a cluster's executors. An empty master leaves it to whoever
    launched the process (``spark-submit`` on Glue or EMR).
    """
    jars = {"spark.jars": ",".join(runtime_jars())} if with_jars else {}
    master = Settings().spark_master if master is None else master
    return {
        **({"spark.master": master} if master else {}),
        "spark.app.name": "wap-pipeline",
        **jars,
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "1g",
    }


def _jdbc_properties(uri: str) -> dict[str, str]:
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("the Spark engine needs a SQLite catalog in a file, not in memory")
        return {"uri": f"jdbc:sqlite:{Path(url.database).resolve()}"}
    if backend == "postgresql":
        host = url.host or "localhost"
        port = f":{url.port}" if url.port else ""
        properties = {"uri": f"jdbc:postgresql://{host}{port}/{url.database or ''}"}
        if url.username:
            properties["jdbc.user"] = url.username
        if url.password:
            properties["jdbc.password"] = str(url.password)
        return properties
    raise ValueError(f"the Spark engine has no JDBC mapping for a {backend} SqlCatalog ({uri})")


# PyIceberg Glue/S3 properties that Iceberg's Java catalog reads under the same names.
_PASS_THROUGH = ("glue.id", "glue.endpoint", "s3.endpoint", "s3.path-style-access", "client.region")


def catalog_spark_config(name: str, properties: Mapping[str, str]) -> dict[str, str]:
    """``spark.sql.catalog.<name>.*`` for the catalog PyIceberg loads with ``properties``."""
    prefix = f"spark.sql.catalog.{name}"
    kind = properties.get("type") or (
        "sql" if str(properties.get("uri", "")).startswith(("sqlite", "postgresql")) else ""
    )
    conf = {prefix: "org.apache.iceberg.spark.SparkCatalog", f"{prefix}.cache-enabled": "false"}
    if properties.get("warehouse"):
        conf[f"{prefix}.warehouse"] = properties["warehouse"]
    if kind == "sql":
        conf[f"{prefix}.type"] = "jdbc"
        # PyIceberg creates the catalog tables; the JVM must not (it would hold a SQLite lock).
        conf[f"{prefix}.jdbc.init-catalog-tables"] = "false"
        conf.update({f"{prefix}.{k}": v for k, v in _jdbc_properties(properties["uri"]).items()})
    elif kind == "glue":
        conf[f"{prefix}.type"] = "glue"
        conf[f"{prefix}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        conf.update({f"{prefix}.{k}": properties[k] for k in _PASS_THROUGH if properties.get(k)})
    else:
        raise ValueError(
            f"the Spark engine does not know how to open a {kind or 'untyped'} PyIceberg catalog"
        )
    return conf


def wap_catalog_spark_config(settings: Settings) -> dict[str, str]:
    properties = configured_properties(settings.catalog_name) or default_catalog_properties(settings)
    return catalog_spark_config(settings.catalog_name, properties)


_lock = threading.Lock()
_pyspark = None  # the process's PySparkResource (dagster-pyspark), set up once
_sessions: dict[tuple, object] = {}


def spark_session(settings: Settings | None = None, extra_config: Mapping[str, str] | None = None):
    """The process's SparkSession for the configured catalog (built on first use, then reused).

    ``extra_config`` (e.g. ``spark.master``, memory) applies when the process's context is created;
    giving ``spark.jars`` there replaces the local runtime jars (a platform that brings Iceberg itself).
    """
    global _pyspark
    settings = settings or Settings.from_env()
    catalog_conf = wap_catalog_spark_config(settings)
    key = tuple(sorted(catalog_conf.items()))
    with _lock:
        session = _sessions.get(key)
        if session is not None:
            return session
        if _pyspark is None:
            from dagster import build_init_resource_context
            from dagster_pyspark import PySparkResource

            extra = dict(extra_config or {})
            base = base_spark_config(with_jars="spark.jars" not in extra, master=settings.spark_master)
            config = {**base, **catalog_conf, **extra}
            # The rules run in Python on the executors: the same interpreter (and so the same
            # packages) as this driver, unless the platform says otherwise.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            resource = PySparkResource(spark_config=config)
            resource.setup_for_execution(build_init_resource_context())
            resource.spark_context.setLogLevel("ERROR")
            _pyspark = resource
            session = resource.spark_session
        else:
            # Same context (jars, extensions), a separate SQL conf and catalog manager.
            session = _pyspark.spark_session.newSession()
            for name, value in catalog_conf.items():
                session.conf.set(name, value)
        _sessions[key] = session
        return session


def stop_spark() -> None:
    """Stop the process's SparkContext (tests; a long-lived process simply keeps it)."""
    global _pyspark
    with _lock:
        if _pyspark is not None:
            _pyspark.spark_session.stop()
        _pyspark = None
        _sessions.clear()


def _quote(part: str) -> str:
    return "`" + part.replace("`", "``") + "`"


def to_arrow(frame) -> pa.Table:
    """Collect a Spark DataFrame as an Arrow table (pyspark 4: ``toArrow``; 3.5: its Arrow collect)."""
    if hasattr(frame, "toArrow"):
        return frame.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(frame.schema)
    batches = frame._collect_as_arrow()
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def to_spark(session, rows: pa.Table, schema):
    """An Arrow table as a Spark DataFrame of exactly ``schema`` (the target table's Spark schema).

    Through pandas with Arrow transfers (pyspark 3.5 has no ``createDataFrame(pa.Table)``); integer
    columns with nulls stay exact Python ints (``integer_object_nulls``), not floats.
    """
    ordered = rows.select([field.name for field in schema.fields])
    frame = ordered.to_pandas(integer_object_nulls=True)
    return session.createDataFrame(frame, schema=schema)


def _in_window(window: DedupWindow):
    """The dedup window as a Spark column predicate (prunes curated's day partitions)."""
    from pyspark.sql import functions as F

    start, end = (F.lit(t.isoformat()).cast("timestamp") for t in (window.start, window.end))
    return (F.col(EVENT_TIME) >= start) & (F.col(EVENT_TIME) < end)


def _relaxed(schema):
    """``schema`` with every column nullable: what the rules hand back to Spark (Iceberg still checks the
    table's required columns when the rows are written)."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, f.dataType, True) for f in schema.fields])


def _window_sql(window: DedupWindow) -> str:
    start, end = window.start.isoformat(), window.end.isoformat()
    return f"{EVENT_TIME} >= CAST('{start}' AS TIMESTAMP) AND {EVENT_TIME} < CAST('{end}' AS TIMESTAMP)"


# --- What runs on Spark's executors ---------------------------------------------------------------
# Module-level functions (cloudpickle ships them by reference: the executors import this package) that
# apply the rules of wap_pipeline.rules to the Arrow record batches Spark hands them (``mapInArrow``).

_KIND, _SKIPPED, _UNAUTHORIZED, _INFO, _ORDER = (
    "_wap_kind",
    "_wap_skipped",
    "_wap_unauthorized",
    "_wap_info",
    "_wap_order",
)
_ROW, _STATS, _MISMATCH, _UNAUTHORIZED_ROW = "row", "stats", "mismatch", "unauthorized"
_SIDE, _SUPERSEDES = "_wap_current", "_wap_supersedes"
CURRENT_COLUMNS = (KEY, "is_replay", EVENT_TIME, "sent_timestamp", PAYLOAD)
MERGE_ROWS_PER_PARTITION = 200_000
"""The curated plan of a partition holds its rows in one executor's memory: about this many at most."""
PERSIST_LEVEL = "DISK_ONLY"
"""Where the executors keep the tagged rows / the curated winners between the counts and the write: on
their local disk. Kept in memory (MEMORY_AND_DISK), a 3M-event batch filled a 2 GB executor's storage
memory and the executor died of heap exhaustion while reading the next raw file."""
MISMATCH_CHUNKS = 100
"""Schema-mismatch reports read back (first problem per field, 5 example ids per field: a few suffice)."""


def _standardize_batches(
    batches: Iterator[pa.RecordBatch],
    job: Standardization,
    raw_schema: pa.Schema,
    out_schema: pa.Schema,
    quarantined,
    grants,
) -> Iterator[pa.RecordBatch]:
    """:meth:`Standardization.apply` on each record batch of raw rows. Besides the rows (kind ``row``)
    it reports, as rows of other kinds: per batch the counts (``stats``), each unauthorized replay's
    lineage (``unauthorized``) and a schema mismatch (``mismatch``, the error as JSON, ordered by the
    batch's first row)."""
    quarantined_ids: Collection[str] = quarantined.value
    granted: Grants = grants.value
    for batch in batches:
        if batch.num_rows == 0:
            continue
        raw = conform_to(pa.Table.from_batches([batch]), raw_schema)
        first = raw.slice(0, 1).to_pylist()[0]
        order = f"{first['landing_file_key']}\x00{first['line_number']:020d}"
        try:
            result = job.apply(raw, quarantined_ids, granted)
        except SchemaMismatchError as error:
            info = json.dumps({"problems": error.problems, "examples": error.examples})
            yield from pa.Table.from_pylist(
                [{_KIND: _MISMATCH, _INFO: info, _ORDER: order}], schema=out_schema
            ).to_batches()
            continue
        rows, count = result.rows, result.rows.num_rows
        columns = [
            rows[field.name].cast(field.type)
            if field.name in rows.column_names
            else pa.nulls(count, field.type)
            for field in out_schema
        ]
        columns[out_schema.get_field_index(_KIND)] = pa.repeat(pa.scalar(_ROW, pa.string()), count)
        yield from pa.table(columns, schema=out_schema).to_batches()
        meta = [
            {
                _KIND: _STATS,
                _SKIPPED: result.skipped.num_rows,
                _UNAUTHORIZED: result.unauthorized_replays.num_rows,
            }
        ]
        meta += [
            {_KIND: _UNAUTHORIZED_ROW, _INFO: json.dumps(lineage, default=str)}
            for lineage in result.unauthorized_replays.to_pylist()
        ]
        yield from pa.Table.from_pylist(meta, schema=out_schema).to_batches()


_REASONS_SCHEMA = pa.schema([("reason", pa.string()), ("n", pa.int64())])
_IDS_SCHEMA = pa.schema([("id", pa.string())])


def _reason_counts(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """:func:`rules.audit.reason_counts` of each batch of invalid rows (Spark sums them by reason)."""
    for batch in batches:
        counts = reason_counts(pa.Table.from_batches([batch]))
        yield pa.RecordBatch.from_pydict(
            {"reason": list(counts), "n": list(counts.values())}, schema=_REASONS_SCHEMA
        )


def _sample_ids(batches: Iterator[pa.RecordBatch], sample_size: int) -> Iterator[pa.RecordBatch]:
    """:func:`rules.audit.sample_ids` of each batch of invalid rows (Spark keeps the first of all)."""
    for batch in batches:
        yield pa.RecordBatch.from_pydict(
            {"id": sample_ids(pa.Table.from_batches([batch]), sample_size)}, schema=_IDS_SCHEMA
        )


def _plan_partition(
    batches: Iterator[pa.RecordBatch], curated_schema: pa.Schema, out_schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """:func:`rules.curated.plan_merge` of one partition: the batch's rows (``_wap_current`` 0) and
    curated's rows (1) of the keys hashed to this partition -- all copies of a key are here. Yields the
    winners, each marked with whether it supersedes a curated row."""
    parts = [pa.Table.from_batches([batch]) for batch in batches if batch.num_rows]
    if not parts:
        return
    rows = pa.concat_tables(parts)
    is_current = pc.equal(rows[_SIDE], 1)
    incoming = conform_to(rows.filter(pc.invert(is_current)).select(curated_schema.names), curated_schema)
    if incoming.num_rows == 0:
        return
    current = conform_to(rows.filter(is_current).select(list(CURRENT_COLUMNS)), curated_schema)
    del rows, parts
    plan = plan_merge(incoming, current)
    winners = plan.winners
    supersedes = pc.is_in(winners[KEY], value_set=pa.array(plan.superseded_keys, winners[KEY].type))
    columns = [winners[field.name].cast(field.type) for field in out_schema if field.name != _SUPERSEDES]
    yield from pa.table([*columns, supersedes], schema=out_schema).to_batches()


class SparkEngine:
    name = "spark"

    def __init__(self, session, catalog_name: str):
        self.session = session
        self.catalog_name = catalog_name

    @classmethod
    def from_settings(cls, settings: Settings | None = None, extra_config: Mapping[str, str] | None = None):
        settings = settings or Settings.from_env()
        return cls(spark_session(settings, extra_config), settings.catalog_name)

    def identifier(self, table: Table, ref: str = wap.MAIN) -> str:
        parts = [self.catalog_name, *table.name()]
        if ref != wap.MAIN:
            parts.append(f"branch_{ref}")
        return ".".join(_quote(part) for part in parts)

    def _table_name(self, table: Table) -> str:
        return ".".join(table.name())

    def scan_batch(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> pa.Table:
        from pyspark.sql import functions as F

        frame = self.session.table(self.identifier(table, ref)).where(F.col("batch_id") == batch_id)
        if selected_fields != ("*",):
            frame = frame.select(*selected_fields)
        return conform(to_arrow(frame), table)

    def scan_batch_chunks(
        self, table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
    ) -> Iterator[pa.Table]:
        """One chunk: Spark collects the batch to the driver in one go (its own memory bound)."""
        yield self.scan_batch(table, ref, batch_id, selected_fields)

    def write_new_branch(
        self,
        table: Table,
        name: str,
        chunks: Iterable[pa.Table],
        properties: Callable[[], Mapping[str, str]],
    ) -> int:
        """Every chunk first (a chunk that raises leaves no branch), then the branch and one Spark
        append: Spark writes a DataFrame, so the chunks are joined on the driver."""
        target = table.schema().as_arrow()
        parts = [chunk.select(target.names).cast(target) for chunk in chunks]
        rows = pa.concat_tables(parts) if parts else target.empty_table()
        wap.create_branch_from_main(table, name)
        self._append(table, name, rows, dict(properties()))
        return rows.num_rows

    def _append(self, table: Table, ref: str, rows: pa.Table, properties: Mapping[str, str]) -> None:
        target = self.session.table(self.identifier(table)).schema
        self._write(table, ref, to_spark(self.session, rows, target), properties)

    def _write(self, table: Table, ref: str, frame, properties: Mapping[str, str]) -> None:
        """One Spark append of ``frame`` to ``ref``, fenced by the writer lease, with ``properties``
        (and the lease's token) in the snapshot summary."""
        writer = frame.select(*top_level_columns(table.schema())).writeTo(self.identifier(table, ref))
        for key, value in {**properties, **lease.fence(table)}.items():
            writer = writer.option(f"snapshot-property.{key}", str(value))
        writer.append()

    def fast_forward(self, table: Table, branch: str) -> Snapshot:
        """``CALL <catalog>.system.fast_forward(...)``; Iceberg checks ancestry at commit time."""
        table.refresh()
        if branch not in table.metadata.refs:
            raise ValueError(f"no branch {branch}")
        name, quoted_branch = self._table_name(table), branch.replace("'", "''")
        lease.fence(table)
        try:
            self.session.sql(
                f"CALL {_quote(self.catalog_name)}.system.fast_forward('{name}', '{wap.MAIN}', '{quoted_branch}')"
            ).collect()
        except Exception as error:  # pyspark wraps the JVM's IllegalArgumentException / ValidationException
            if "Cannot fast-forward" in str(error):
                raise wap.NotFastForwardError(
                    f"main is not an ancestor of {branch} (Iceberg refused the fast-forward): main moved "
                    f"after the branch was created"
                ) from error
            raise
        table.refresh()
        head = table.metadata.snapshot_by_id(table.metadata.refs[branch].snapshot_id)
        if table.current_snapshot() is None or table.current_snapshot().snapshot_id != head.snapshot_id:
            raise RuntimeError(f"fast_forward of main to {branch} did not move main to {head.snapshot_id}")
        return head

    def scan_keys(
        self, table: Table, keys: pa.Array, window: DedupWindow, selected_fields: tuple[str, ...]
    ) -> pa.Table:
        from pyspark.sql import functions as F

        wanted = self.session.createDataFrame([(key,) for key in keys.to_pylist()], f"{KEY} string")
        frame = (
            self.session.table(self.identifier(table))
            .where(_in_window(window))
            .select(*selected_fields)
            .join(F.broadcast(wanted), on=KEY, how="left_semi")
        )
        return conform(to_arrow(frame), table)

    def commit_merge(
        self, table: Table, plan: MergePlan, window: DedupWindow | None, properties: dict[str, str]
    ) -> None:
        """The curated commit of a plan made on the driver (see :meth:`merge_batch` for the distributed one)."""
        target = self.session.table(self.identifier(table)).schema
        superseded = (
            self.session.createDataFrame([(k,) for k in plan.superseded_keys], f"{KEY} string")
            if plan.superseded_keys
            else None
        )
        self._commit_frames(
            table, to_spark(self.session, plan.winners, target), superseded, window, properties
        )

    def _commit_frames(self, table: Table, winners, superseded_keys, window: DedupWindow | None, properties):
        """The curated commit: on a work branch, delete the rows of ``superseded_keys`` (a DataFrame of
        keys, or None) inside the window and append ``winners`` (with the batch id in the summary), then
        one fast-forward of main -- atomic on main, like the arrow engine."""
        batch_id = properties[wap.BATCH_ID_PROPERTY]
        branch = f"{CURATED_WORK_BRANCH_PREFIX}{wap.validate_batch_id(batch_id)}"
        table.refresh()
        if branch in table.metadata.refs:  # left by a crashed attempt; it was never published
            table.manage_snapshots().remove_branch(branch).commit()
        wap.create_branch_from_main(table, branch)
        if superseded_keys is not None:
            view = "wap_superseded_" + re.sub(r"\W", "_", branch)  # a SQL name, the same in every process
            superseded_keys.createOrReplaceTempView(view)
            lease.fence(table)
            self.session.sql(
                f"DELETE FROM {self.identifier(table, branch)} WHERE {KEY} IN (SELECT {KEY} FROM {view}) "
                f"AND {_window_sql(window)}"
            ).collect()
            self.session.catalog.dropTempView(view)
        self._write(table, branch, winners, properties)
        fault_point("curated.before_commit")
        self.fast_forward(table, branch)
        table.refresh()
        table.manage_snapshots().remove_branch(branch).commit()

    def compact_days(self, table: Table, days: list[date], min_files: int) -> compaction.CompactionResult:
        """``CALL <catalog>.system.rewrite_data_files`` on the days where a size tier holds ``min_files``
        small files (the same trigger as the arrow engine's): Iceberg's own bin-pack of the day's small
        files, one ``replace`` snapshot (no batch id), rows unchanged."""
        if min_files < 2:
            return compaction.CompactionResult()
        table.refresh()
        due = compaction.plan_compaction(table, days, min_files)
        groups = {
            day: tasks for day, tasks in compaction.small_files_by_day(table, days).items() if day in due
        }
        if not groups:
            return compaction.CompactionResult()
        where = " OR ".join(
            f"({_window_sql(DedupWindow(start, start + timedelta(days=1)))})"
            for start in (datetime.combine(day, time(), UTC) for day in sorted(groups))
        )
        lease.fence(table)  # Iceberg's procedure takes no summary properties: fenced, not tagged
        row = self.session.sql(
            f"CALL {_quote(self.catalog_name)}.system.rewrite_data_files("
            f"table => '{self._table_name(table)}', where => \"{where}\", "
            f"options => map('min-input-files', '{min_files}'))"
        ).collect()[0]
        table.refresh()
        return compaction.CompactionResult(
            sorted(groups),
            int(row["rewritten_data_files_count"]),
            int(row["added_data_files_count"]),
            sum(task.file.record_count for tasks in groups.values() for task in tasks),
        )

    # --- a batch's steps, distributed ----------------------------------------------------------------

    def _batch_frame(self, table: Table, ref: str, batch_id: str):
        from pyspark.sql import functions as F

        return self.session.table(self.identifier(table, ref)).where(F.col("batch_id") == batch_id)

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
        """The executors standardize and tag the raw rows (``mapInArrow`` of :meth:`Standardization.apply`,
        the quarantine ids and the batch's replay grants broadcast); the rows stay on the executors
        (persisted on their local disk) while Spark counts them, then one Spark append writes them to the
        new branch.
        The driver gets counts, the batch's replay tokens (one per data-patcher replay) and at most 5
        unauthorized replays' lineage."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import to_arrow_schema
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        context = self.session.sparkContext
        raw_frame = self._batch_frame(raw, wap.MAIN, batch_id)
        tokens = []
        if REPLAY_TOKEN in raw_frame.columns:
            replays = raw_frame.where(F.col(REPLAY_TOKEN).isNotNull()).select(REPLAY_TOKEN).distinct()
            tokens = [row[0] for row in replays.collect()]
        grants = grants_of(tokens) if tokens else {}
        target = self.session.table(self.identifier(table)).schema
        out = StructType(
            _relaxed(StructType([target[name] for name in job.columns])).fields
            + [
                StructField(_KIND, StringType()),
                StructField(_SKIPPED, LongType()),
                StructField(_UNAUTHORIZED, LongType()),
                StructField(_INFO, StringType()),
                StructField(_ORDER, StringType()),
            ]
        )
        standardize_batches = functools.partial(
            _standardize_batches,
            job=job,
            raw_schema=raw.schema().as_arrow(),
            out_schema=to_arrow_schema(out),
            quarantined=context.broadcast(frozenset(quarantined)),
            grants=context.broadcast(dict(grants)),
        )
        tagged = raw_frame.mapInArrow(standardize_batches, out)
        tagged = tagged.persist(getattr(StorageLevel, PERSIST_LEVEL))
        try:
            kinds = {
                row[_KIND]: row
                for row in tagged.groupBy(_KIND)
                .agg(
                    F.count(F.lit(1)).alias("n"),
                    F.sum(_SKIPPED).alias("skipped"),
                    F.sum(_UNAUTHORIZED).alias("unauthorized"),
                )
                .collect()
            }
            if _MISMATCH in kinds:
                reports = tagged.where(F.col(_KIND) == _MISMATCH).orderBy(_ORDER).select(_INFO)
                raise SchemaMismatchError.combine(
                    SchemaMismatchError(**json.loads(row[0])) for row in reports.take(MISMATCH_CHUNKS)
                )
            rows = int(kinds[_ROW]["n"]) if _ROW in kinds else 0
            skipped = int(kinds[_STATS]["skipped"] or 0) if _STATS in kinds else 0
            unauthorized = int(kinds[_STATS]["unauthorized"] or 0) if _STATS in kinds else 0
            sample = []
            if unauthorized:
                lineage = tagged.where(F.col(_KIND) == _UNAUTHORIZED_ROW).select(_INFO)
                sample = [json.loads(row[0]) for row in lineage.take(5)]
            wap.create_branch_from_main(table, branch)
            self._write(table, branch, tagged.where(F.col(_KIND) == _ROW), properties(skipped, unauthorized))
        finally:
            tagged.unpersist()
        return StandardizedBatch(rows, skipped, unauthorized, sample)

    def audit_batch(self, table: Table, branch: str, batch_id: str, sample_size: int = 10) -> AuditResult:
        """:func:`rules.audit.count_invalid` as Spark aggregations over the branch: the rules' partial
        counts and samples per record batch on the executors, summed (and the first ids taken) by Spark."""
        from pyspark.sql import functions as F

        frame = self._batch_frame(table, branch, batch_id).select(*AUDIT_COLUMNS)
        totals = frame.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.when(F.col("invalid_flag"), 1).otherwise(0)).alias("invalid"),
        ).first()
        rows, invalid_rows = int(totals["rows"]), int(totals["invalid"] or 0)
        if not invalid_rows:
            return AuditResult(rows=rows, invalid_rows=0, reasons={}, sample_invalid_ids=[])
        invalid = frame.where(F.col("invalid_flag"))
        reasons = (
            invalid.mapInArrow(_reason_counts, "reason string, n long")
            .groupBy("reason")
            .agg(F.sum("n").alias("n"))
            .collect()
        )
        ids = (
            invalid.mapInArrow(functools.partial(_sample_ids, sample_size=sample_size), "id string")
            .orderBy("id")
            .limit(sample_size)
            .collect()
        )
        return AuditResult(
            rows=rows,
            invalid_rows=invalid_rows,
            reasons={row["reason"]: int(row["n"]) for row in reasons},
            sample_invalid_ids=[row["id"] for row in ids],
        )

    def merge_batch(
        self,
        standardized: Table,
        table: Table,
        batch_id: str,
        curated_at: datetime,
        window_days: int,
        properties: Callable[[MergeSummary], dict[str, str]],
    ) -> MergeSummary:
        """Curated precedence in Spark: the batch's rows and curated's rows of its keys (inside the dedup
        window, a semi-join) are hash-partitioned by key, and each partition is planned by
        :func:`rules.curated.plan_merge` on an executor. The winners stay there (persisted) while Spark
        counts them and lists the days they touch; the commit deletes the superseded keys (a subquery
        over the winners) and appends the winners on a work branch, then one fast-forward of main."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import to_arrow_schema
        from pyspark.sql.types import BooleanType, StructField, StructType

        columns = top_level_columns(table.schema())
        kept = set(top_level_columns(standardized.schema()))
        incoming = (
            self._batch_frame(standardized, wap.MAIN, batch_id)
            .select(*[c for c in columns if c in kept])
            .withColumn("curated_at", F.lit(curated_at).cast("timestamp"))
            .select(*columns)
        )
        bounds = incoming.agg(
            F.count(F.lit(1)).alias("n"),
            F.to_date(F.min(EVENT_TIME)).alias("low"),
            F.to_date(F.max(EVENT_TIME)).alias("high"),
        ).first()
        standardized_rows = int(bounds["n"])
        window = window_between(bounds["low"], bounds["high"], window_days)
        current = None
        if standardized_rows and window is not None and table.current_snapshot() is not None:
            current = (
                self.session.table(self.identifier(table))
                .where(_in_window(window))
                .select(*CURRENT_COLUMNS)
                .join(incoming.select(KEY).distinct(), on=KEY, how="left_semi")
            )
        both = incoming.withColumn(_SIDE, F.lit(0))
        if current is not None:
            both = both.unionByName(current.withColumn(_SIDE, F.lit(1)), allowMissingColumns=True)
        target = self.session.table(self.identifier(table)).schema
        out = StructType(_relaxed(target).fields + [StructField(_SUPERSEDES, BooleanType())])
        partitions = max(
            int(self.session.conf.get("spark.sql.shuffle.partitions")),
            math.ceil(standardized_rows / MERGE_ROWS_PER_PARTITION),
        )
        plan_partition = functools.partial(
            _plan_partition, curated_schema=table.schema().as_arrow(), out_schema=to_arrow_schema(out)
        )
        planned = both.repartition(partitions, KEY).mapInArrow(plan_partition, out)
        planned = planned.persist(getattr(StorageLevel, PERSIST_LEVEL))
        try:
            counts = planned.agg(
                F.count(F.lit(1)).alias("winners"),
                F.sum(F.when(F.col(_SUPERSEDES), 1).otherwise(0)).alias("superseded"),
            ).first()
            winners, superseded = int(counts["winners"]), int(counts["superseded"] or 0)
            superseded_keys = planned.where(F.col(_SUPERSEDES)).select(KEY) if superseded else None
            days = {row[0] for row in planned.select(F.to_date(EVENT_TIME)).distinct().collect()}
            if superseded_keys is not None:
                replaced = current.join(superseded_keys, on=KEY, how="left_semi")
                days |= {row[0] for row in replaced.select(F.to_date(EVENT_TIME)).distinct().collect()}
            summary = MergeSummary(
                standardized_rows=standardized_rows,
                inserted=winners - superseded,
                superseded=superseded,
                skipped=standardized_rows - winners,
                touched_days=sorted(day for day in days if day is not None),
                window=window,
                looked_up=current.count() if current is not None else 0,
            )
            self._commit_frames(
                table, planned.drop(_SUPERSEDES), superseded_keys, window, properties(summary)
            )
        finally:
            planned.unpersist()
        return summary

    def daily_totals(self, curated: Table, days: list[date]) -> pa.Table:
        """A Spark ``groupBy`` of curated's rows on the days, on the executors: the driver receives one
        row per (day, event_type, currency). Amounts are summed as 38-digit decimals, as
        :func:`rules.curated.partial_totals` sums them (exact; the int64 check is the caller's)."""
        from pyspark.sql import functions as F

        grouped = (
            self.session.table(self.identifier(curated))
            .where(_in_window(days_window(days)))
            .groupBy(F.to_date(EVENT_TIME).alias("event_date"), "event_type", "currency")
            .agg(
                F.count(F.lit(1)).alias("events"),
                F.sum(F.coalesce(F.col("amount_minor"), F.lit(0)).cast("decimal(38,0)")).alias(
                    "amount_minor"
                ),
            )
        )
        return combine_totals([to_arrow(grouped)])

    def duplicate_keys(
        self, curated: Table, window: DedupWindow, sample_size: int = DUPLICATES_SAMPLE
    ) -> DuplicateKeys:
        """A Spark ``groupBy(idempotency_key).count()`` of curated's rows in the window, on the executors:
        the driver receives the rows and the repeated keys counted, and at most ``sample_size`` of those
        keys, in key order with nulls last (as :func:`rules.curated.duplicates_of` picks them)."""
        from pyspark.sql import functions as F

        counts = self.session.table(self.identifier(curated)).where(_in_window(window)).groupBy(KEY).count()
        totals = counts.agg(
            F.sum("count").alias("rows"), F.sum(F.when(F.col("count") > 1, 1).otherwise(0)).alias("keys")
        ).first()
        rows, keys = int(totals["rows"] or 0), int(totals["keys"] or 0)
        sample = {}
        if keys:
            repeated = (
                counts.where(F.col("count") > 1).orderBy(F.col(KEY).asc_nulls_last()).limit(sample_size)
            )
            sample = {row[KEY]: int(row["count"]) for row in repeated.collect()}
        return DuplicateKeys(rows, keys, sample)
