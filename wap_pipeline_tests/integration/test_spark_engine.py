"""The Spark engine (WAP_ENGINE=spark) against the arrow engine: same batches, same results.

Each engine runs the real standardized and curated assets (Dagster, the breaker and quarantine on the
local AWS server) on its own SQLite catalog, from the same raw rows. Processing timestamps
(standardized_at, curated_at) are the only columns allowed to differ. One SparkContext serves the
whole test session (fixture ``spark_engine_runtime``), on a standalone Spark cluster (master + one
worker on 127.0.0.1, fixture ``spark_cluster``): the rules run in the worker's executors.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize

from wap_pipeline import aws
from wap_pipeline.assets.curated import (
    ACCOUNTING_CHECK,
    UNIQUE_CHECK,
    curated_events,
    curated_keys_unique,
    curated_row_accounting,
)
from wap_pipeline.assets.daily_totals import curated_daily_totals
from wap_pipeline.assets.standardized import AUDIT_CHECK, standardized_events
from wap_pipeline.definitions import resources_for
from wap_pipeline.engines.arrow import ArrowEngine
from wap_pipeline.engines.spark import SparkEngine
from wap_pipeline.events import make_events
from wap_pipeline.iceberg import lease, wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.filters import window_filter
from wap_pipeline.iceberg.schemas import RAW_SCHEMA, create_tables
from wap_pipeline.partitions import landing_batches
from wap_pipeline.resources import EngineResource
from wap_pipeline.resources.breaker import CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.resources.replay_grants import ReplayGrants
from wap_pipeline.rules.curated import DedupWindow, daily_totals, duplicate_keys
from wap_pipeline.rules.envelope import raw_rows
from wap_pipeline.rules.replays import ReplayGrant, body_sha256
from wap_pipeline.settings import Settings
from wap_pipeline_tests.wap_cases import raw_batch, write_to_branch

pytestmark = [pytest.mark.integration, pytest.mark.spark]

PROCESSING_COLUMNS = ("standardized_at", "curated_at")


def _shift(timestamp: str, seconds: int) -> str:
    moved = datetime.fromisoformat(timestamp) + timedelta(seconds=seconds)
    return moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def landing_records(events: list[dict], batch_id: str, replays: frozenset[int] = frozenset()) -> bytes:
    """The landing file Firehose would have written for these events (one record per line)."""
    lines = []
    for i, event in enumerate(events):
        message_id = f"msg-{batch_id}-{i}"
        record = {
            "message_id": message_id,
            "original_message_id": message_id,
            "idempotency_key": event.get("idempotency_key"),
            "is_replay": i in replays,
            "sent_timestamp": 1_796_040_000_000 + i,
            "receive_count": 1,
            "body": orjson.dumps(event).decode(),
        }
        if i in replays:
            record["replay_token"] = f"token-{batch_id}-{i}"
        lines.append(orjson.dumps(record))
    return b"\n".join(lines) + b"\n"


def replay_grants_of(landed: dict[str, bytes]) -> list[ReplayGrant]:
    """data-patcher's grants for the replays among the landed records, as it writes them before sending."""
    grants = []
    for data in landed.values():
        for line in data.splitlines():
            record = orjson.loads(line)
            if record.get("replay_token"):
                body = record["body"]
                event_id = orjson.loads(body)["event_id"]
                grants.append(
                    ReplayGrant(record["replay_token"], event_id, body_sha256(body), "test", "-", "parity")
                )
    return grants


@functools.cache
def landed_at() -> datetime:
    """The one notion of now of this module: the events are made before it, every batch lands at it,
    so both engines audit each batch against the same reference time."""
    return datetime.now(UTC)


@functools.cache
def batches() -> dict[str, bytes]:
    """Three batches that exercise every path: inserts; supersede, replay, duplicates, quarantine; a bad one."""
    first = make_events(40, seed=701, now=landed_at())
    later = make_events(12, seed=702, now=landed_at())
    second = [
        {
            **first[0],
            "event_id": "evt_later_copy",
            "event_timestamp": _shift(first[0]["event_timestamp"], 60),
        },
        {
            **first[1],
            "event_id": "evt_older_copy",
            "event_timestamp": _shift(first[1]["event_timestamp"], -60),
        },
        dict(first[2]),  # an exact duplicate: skipped
        {**first[3], "event_id": "evt_replay", "amount_minor": 1},  # replayed below: supersedes
        {**first[4], "event_id": "evt_quarantined"},  # quarantined (not a replay): masked
        *later,
        {
            **later[0],
            "event_id": "evt_dup_in_batch",
            "event_timestamp": _shift(later[0]["event_timestamp"], 5),
        },
    ]
    bad = make_events(10, seed=703, now=landed_at())
    bad[2]["idempotency_key"] = None
    bad[5]["currency"] = "usd"
    bad[7]["event_timestamp"] = "yesterday"
    return {
        "b1": landing_records(first, "b1"),
        "b2": landing_records(second, "b2", replays=frozenset({3})),
        "b3": landing_records(bad, "b3"),
    }


@pytest.fixture
def use_catalog(stack, tmp_path, monkeypatch):
    """Point the process at a fresh catalog (and breaker) of its own; returns its settings."""
    monkeypatch.delenv("WAP_ENGINE", raising=False)
    Quarantine(aws.client("dynamodb", stack), stack.quarantine_table).add("evt_quarantined", reason="test")
    ReplayGrants(aws.client("dynamodb", stack), stack.replay_grants_table).grant(replay_grants_of(batches()))

    def use(name: str) -> Settings:
        monkeypatch.setenv("WAP_STATE_DIR", str(tmp_path / name))
        monkeypatch.setenv("WAP_PIPELINE_NAME", f"pipeline_{name}")
        return Settings.from_env()

    return use


def land(settings: Settings, batch_id: str, data: bytes) -> None:
    """What raw/events does for a batch: every line as it came, bookmark and landing time in the
    snapshot summary, at the module's one landing time."""
    raw = create_tables(load_wap_catalog(settings))["raw"]
    rows = raw_rows(data, f"landing/{batch_id}.ndjson", batch_id, landed_at())
    raw.append(
        pa.Table.from_pylist(rows, schema=RAW_SCHEMA.as_arrow()),
        snapshot_properties={
            wap.BATCH_ID_PROPERTY: batch_id,
            wap.BOOKMARK_PROPERTY: f"landing/{batch_id}",
            wap.LANDED_AT_PROPERTY: landed_at().isoformat(),
        },
    )


def process(engine: str, batch_id: str):
    """Materialize standardized, curated (with its blocking checks) and the daily totals for one batch
    with the given engine, in-process."""
    resources = resources_for(Settings.from_env())
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(landing_batches.name, [batch_id])
        return materialize(
            [
                standardized_events,
                curated_events,
                curated_keys_unique,
                curated_row_accounting,
                curated_daily_totals,
            ],
            partition_key=batch_id,
            instance=instance,
            resources={
                **resources,
                "engine": EngineResource(config=resources["engine"].config, engine=engine),
            },
            raise_on_error=False,
        )


def content(table, sort_by: tuple[str, ...], ref: str | None = None) -> list[dict]:
    """Every row (read by PyIceberg) without processing timestamps, in a stable order."""
    table.refresh()
    scan = table.scan() if ref is None else table.scan().use_ref(ref)
    rows = scan.to_arrow()
    rows = rows.drop_columns([c for c in PROCESSING_COLUMNS if c in rows.column_names])
    return rows.sort_by([(c, "ascending") for c in sort_by]).to_pylist()


def audit_outcome(result) -> dict:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == AUDIT_CHECK]
    metadata = {k: v.value for k, v in evaluation.metadata.items() if k != "branch"}
    return {"passed": evaluation.passed, **metadata}


def curated_checks(result) -> dict:
    """Curated's blocking checks as they ended: passed and metadata, per check (none: not run)."""
    return {
        e.check_name: {"passed": e.passed, **{k: v.value for k, v in e.metadata.items()}}
        for e in result.get_asset_check_evaluations()
        if e.check_name in (UNIQUE_CHECK, ACCOUNTING_CHECK)
    }


def run_engine(use_catalog, engine: str) -> dict:
    settings = use_catalog(engine)
    outcomes = {}
    for batch_id, data in batches().items():
        land(settings, batch_id, data)
        result = process(engine, batch_id)
        outcomes[batch_id] = {
            "success": result.success,
            "audit": audit_outcome(result),
            "checks": curated_checks(result),
        }
    tables = create_tables(load_wap_catalog(settings))
    standardized, curated = tables["standardized"], tables["curated"]
    failed_branch = wap.branch_name("b3")
    standardized.refresh()
    curated.refresh()
    return {
        "outcomes": outcomes,
        "standardized": content(standardized, ("batch_id", "line_number")),
        "curated": content(curated, ("idempotency_key",)),
        "daily_totals": content(tables["daily_totals"], ("event_date", "event_type", "currency")),
        # What the pure rule makes of the whole of curated, read back by PyIceberg.
        "recomputed_totals": daily_totals(curated.scan().to_arrow()).to_pylist(),
        "failed_branch": content(standardized, ("batch_id", "line_number"), ref=failed_branch),
        "abandoned": f"{wap.ABANDONED_PROPERTY_PREFIX}{failed_branch}" in standardized.metadata.properties,
        "bookmark": wap.bookmark(standardized),
        # Distinct ids: arrow's curated delete and append are two snapshots of one commit, both tagged.
        "published": tuple(list(dict.fromkeys(wap.published_batches(t))) for t in (standardized, curated)),
        "breaker": CircuitBreaker(
            aws.client("dynamodb", settings), settings.breaker_table, settings.pipeline_name
        ).state(),
        # Every batch's commit carries the writer token of the step's lease, whoever made it.
        "untagged": [
            s.snapshot_id
            for t in (standardized, curated)
            for s in t.metadata.snapshots
            if s.summary.get(wap.BATCH_ID_PROPERTY) and lease.WRITER_TOKEN_PROPERTY not in s.summary
        ],
    }


def ran_on_the_cluster(cluster) -> list[str]:
    """The executor logs of this process's application on the standalone cluster; asserts that the
    application runs there (holding the worker's cores)."""
    context = SparkEngine.from_settings(Settings.from_env()).session.sparkContext
    assert context.master == cluster.url
    (app,) = [a for a in cluster.status()["activeapps"] if a["id"] == context.applicationId]
    assert app["cores"] > 0
    return [log.read_text() for log in (cluster.work_dir / context.applicationId).glob("*/stderr")]


def test_spark_and_arrow_give_identical_results(use_catalog, spark_engine_runtime):
    arrow = run_engine(use_catalog, "arrow")
    spark = run_engine(use_catalog, "spark")

    # Spark's share ran on the standalone cluster: its executors (JVMs the worker started) ran Python.
    executor_logs = ran_on_the_cluster(spark_engine_runtime)
    assert executor_logs and any("PythonRunner" in log for log in executor_logs)

    # The batches did what they were built to do (so that parity is about something).
    assert [arrow["outcomes"][b]["success"] for b in ("b1", "b2", "b3")] == [True, True, False]
    assert arrow["published"] == (["b1", "b2"], ["b1", "b2"])
    assert arrow["bookmark"] == {"batch_id": "b2", "bookmark": "landing/b2"}
    b3 = arrow["outcomes"]["b3"]["audit"]
    assert b3["passed"] is False and b3["invalid_rows"] == 3
    assert b3["invalid_by_rule"] == {
        "idempotency_key_missing": 1,
        "currency_invalid": 1,
        "event_timestamp_missing": 1,
        "event_timestamp unparseable": 1,
    }
    assert arrow["abandoned"] and arrow["breaker"].status == "RED" and arrow["breaker"].batch_id == "b3"
    # Curated's checks ran on the merged batches (the window of b2 holds all of curated), not on b3.
    b2_checks = arrow["outcomes"]["b2"]["checks"]
    assert b2_checks[UNIQUE_CHECK]["passed"] and b2_checks[ACCOUNTING_CHECK]["passed"]
    assert (b2_checks[UNIQUE_CHECK]["rows_checked"], b2_checks[UNIQUE_CHECK]["duplicate_keys"]) == (52, 0)
    assert arrow["outcomes"]["b3"]["checks"] == {}
    assert len(arrow["standardized"]) == 40 + 18 - 1  # b2 minus the quarantined record
    assert len(arrow["curated"]) == 40 + 12
    (replayed,) = [r for r in arrow["curated"] if r["event_id"] == "evt_replay"]
    assert (replayed["is_replay"], replayed["amount_minor"]) == (True, 1), (
        "granted: it superseded the original"
    )

    # Parity: same outcomes, audit and check metadata, rows, failed branch, bookmark and published batches.
    assert spark["outcomes"] == arrow["outcomes"]
    assert spark["standardized"] == arrow["standardized"]
    assert spark["curated"] == arrow["curated"]
    # The totals: the arrow engine's streamed partial sums and Spark's groupBy give the same table,
    # and it is the pure rule's over the whole of curated.
    assert arrow["daily_totals"] and sum(r["events"] for r in arrow["daily_totals"]) == 40 + 12
    assert arrow["daily_totals"] == arrow["recomputed_totals"]
    assert spark["daily_totals"] == arrow["daily_totals"]
    assert spark["recomputed_totals"] == arrow["recomputed_totals"]
    assert spark["failed_branch"] == arrow["failed_branch"]
    assert spark["abandoned"] is True
    assert spark["bookmark"] == arrow["bookmark"]
    assert spark["published"] == arrow["published"]
    assert (spark["breaker"].status, spark["breaker"].batch_id) == ("RED", "b3")
    assert arrow["untagged"] == spark["untagged"] == []


def test_both_engines_find_the_same_duplicate_keys(use_catalog, spark_engine_runtime):
    """Curated's uniqueness check through each engine (arrow a data file at a time, Spark on its
    executors) finds what the pure rule finds in the window's keys held whole: the same count, and the
    same sample of the first keys in key order, spread over files and days."""
    settings = use_catalog("duplicates")
    curated = create_tables(load_wap_catalog(settings))["curated"]
    day = datetime(2026, 10, 1, 12, tzinfo=UTC)
    # Four commits (files) over three days: 15 keys repeated across files and days (k19 three times),
    # and copies outside the window that must not count.
    plan = [
        (0, [f"k{n:02d}" for n in range(20)]),
        (1, [f"k{n:02d}" for n in range(6, 20)] + ["solo-1", "solo-2"]),
        (1, ["k19", "k00"]),
        (5, ["solo-1", "k03"]),  # outside the window
    ]
    for number, (offset, keys) in enumerate(plan):
        rows = [
            {
                "idempotency_key": key,
                "event_timestamp": day + timedelta(days=offset, minutes=n),
                "payload": "{}",
                "batch_id": f"d{number}",
                "is_replay": False,
                "curated_at": day,
            }
            for n, key in enumerate(keys)
        ]
        curated.append(pa.Table.from_pylist(rows, schema=curated.schema().as_arrow()))
    window = DedupWindow(day - timedelta(days=1), day + timedelta(days=3))

    expected = duplicate_keys(curated.scan(row_filter=window_filter(window)).to_arrow()["idempotency_key"])
    assert (expected.rows, expected.keys) == (20 + 16 + 2, 15)
    assert list(expected.sample) == ["k00", *(f"k{n:02d}" for n in range(6, 15))]
    assert expected.sample["k00"] == 2
    arrow, spark = ArrowEngine(), SparkEngine.from_settings(settings)
    assert arrow.duplicate_keys(curated, window) == expected
    assert spark.duplicate_keys(curated, window) == expected
    shorter = {"k00": 2, "k06": 2, "k07": 2}
    assert (
        arrow.duplicate_keys(curated, window, 3).sample
        == spark.duplicate_keys(curated, window, 3).sample
        == shorter
    )


def test_batches_published_by_one_engine_are_read_by_the_other(use_catalog, spark_engine_runtime):
    settings = use_catalog("mixed")
    data = batches()
    for batch_id, engine in (("b1", "spark"), ("b2", "arrow")):
        land(settings, batch_id, data[batch_id])
        assert process(engine, batch_id).success

    tables = create_tables(load_wap_catalog(settings))
    standardized, curated = tables["standardized"], tables["curated"]
    # PyIceberg reads what Spark published (b1) and merged into (b2 superseded b1's keys in curated).
    assert wap.published_batches(standardized) == ["b1", "b2"]
    assert list(dict.fromkeys(wap.published_batches(curated))) == ["b1", "b2"]
    assert wap.bookmark(standardized) == {"batch_id": "b2", "bookmark": "landing/b2"}
    assert wap.scan_batch(standardized, wap.MAIN, "b1").num_rows == 40

    # Spark reads what PyIceberg published, row for row.
    engine = SparkEngine.from_settings(settings)
    for table, key in ((standardized, ("batch_id", "line_number")), (curated, ("idempotency_key",))):
        via_spark = engine.session.table(engine.identifier(table)).drop(*PROCESSING_COLUMNS)
        expected = content(table, key)
        from wap_pipeline.engines.spark import to_arrow

        got = to_arrow(via_spark).sort_by([(c, "ascending") for c in key])
        got = got.cast(pa.schema([table.schema().as_arrow().field(n) for n in got.column_names]))
        assert got.to_pylist() == expected
    assert engine.scan_batch(standardized, wap.MAIN, "b2").num_rows == 17

    # And the other way round again: Spark's curated merge on top of arrow's agrees with an all-arrow run.
    land(settings, "b4", landing_records(make_events(5, seed=704, now=landed_at()), "b4"))
    assert process("spark", "b4").success
    assert list(dict.fromkeys(wap.published_batches(curated.refresh()))) == ["b1", "b2", "b4"]
    assert len(content(curated, ("idempotency_key",))) == 40 + 12 + 5


def test_spark_fast_forward_refuses_when_main_moved(use_catalog, spark_engine_runtime):
    settings = use_catalog("refuse")
    raw = create_tables(load_wap_catalog(settings))["raw"]
    engine = SparkEngine.from_settings(settings)
    ours = wap.branch_name("b1")
    engine.write_new_branch(raw, ours, [raw_batch("b1", 4)], lambda: {wap.BATCH_ID_PROPERTY: "b1"})
    # Another writer publishes in between.
    theirs = wap.branch_name("b2")
    wap.create_branch_from_main(raw, theirs)
    write_to_branch(raw, theirs, raw_batch("b2", 2), {wap.BATCH_ID_PROPERTY: "b2"})
    wap.fast_forward(raw, theirs)
    head = raw.refresh().current_snapshot().snapshot_id

    with pytest.raises(wap.NotFastForwardError):
        engine.fast_forward(raw, ours)
    assert raw.refresh().current_snapshot().snapshot_id == head
    assert wap.published_batches(raw) == ["b2"]
    assert engine.scan_batch(raw, ours, "b1").num_rows == 4, "the branch is kept as it was"


@pytest.mark.postgres
def test_engines_share_a_postgresql_catalog(
    use_catalog, postgres_database, tmp_path, monkeypatch, spark_engine_runtime
):
    """PostgreSQL is configuration only, for Spark too: PyIceberg's SqlCatalog, Iceberg's JDBC catalog."""
    settings = use_catalog("postgres")
    monkeypatch.setenv("PYICEBERG_CATALOG__WAP__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__WAP__URI", postgres_database)
    monkeypatch.setenv("PYICEBERG_CATALOG__WAP__WAREHOUSE", f"file://{tmp_path}/pg-warehouse")
    data = batches()
    for batch_id, engine in (("b1", "spark"), ("b2", "arrow"), ("b3", "spark")):
        land(settings, batch_id, data[batch_id])
        assert process(engine, batch_id).success is (batch_id != "b3")

    tables = create_tables(load_wap_catalog(settings))
    standardized, curated = tables["standardized"], tables["curated"]
    assert wap.published_batches(standardized) == ["b1", "b2"]
    assert wap.bookmark(standardized) == {"batch_id": "b2", "bookmark": "landing/b2"}
    assert len(content(curated, ("idempotency_key",))) == 40 + 12
    assert wap.scan_batch(standardized, wap.branch_name("b3"), "b3").num_rows == 10, (
        "Spark wrote the failed branch"
    )


def test_spark_compaction_rewrites_a_day_without_changing_rows(use_catalog, spark_engine_runtime):
    """The Spark engine compacts with Iceberg's rewrite_data_files: fewer files, same rows, no batch id."""
    from wap_pipeline.iceberg.compaction import small_files_by_day

    settings = use_catalog("compact")
    curated = create_tables(load_wap_catalog(settings))["curated"]
    when = datetime(2026, 10, 1, 12, tzinfo=UTC)
    for batch in range(1, 5):
        rows = [
            {
                "idempotency_key": f"k-{batch}-{n}",
                "event_timestamp": when + timedelta(minutes=batch),
                "payload": "{}",
                "batch_id": f"b{batch}",
                "is_replay": False,
                "curated_at": when,
            }
            for n in range(3)
        ]
        curated.append(
            pa.Table.from_pylist(rows, schema=curated.schema().as_arrow()),
            snapshot_properties={wap.BATCH_ID_PROPERTY: f"b{batch}"},
        )
    before = content(curated, ("idempotency_key",))
    total = wap.row_count(curated)

    result = SparkEngine.from_settings(settings).compact_days(curated, [when.date()], min_files=3)

    assert (result.days, result.files_before, result.files_after, result.rows) == ([when.date()], 4, 1, 12)
    curated.refresh()
    assert content(curated, ("idempotency_key",)) == before
    assert wap.row_count(curated) == total
    assert len(small_files_by_day(curated, [when.date()])[when.date()]) == 1
    head = curated.current_snapshot()
    assert head.summary.operation.value == "replace"
    assert wap.BATCH_ID_PROPERTY not in head.summary.additional_properties
    assert wap.published_batches(curated) == ["b1", "b2", "b3", "b4"]


def test_a_schema_mismatch_stops_the_batch_on_both_engines_alike(use_catalog, spark_engine_runtime):
    """The executors report a chunk that does not fit the schema; the driver raises the batch's one error
    (every field named, the same example ids) and nothing is written: no branch, main unchanged."""
    events = make_events(8, seed=705, now=landed_at())
    events[1]["coupon"] = "SAVE10"  # a field the table does not have
    events[6]["amount_minor"] = "12.50"  # a string where a long is expected
    data = landing_records(events, "b5")
    outcomes = {}
    for engine in ("arrow", "spark"):
        settings = use_catalog(f"mismatch_{engine}")
        land(settings, "b5", data)
        result = process(engine, "b5")
        standardized = create_tables(load_wap_catalog(settings))["standardized"]
        standardized.refresh()
        outcomes[engine] = {
            "success": result.success,
            "audit": audit_outcome(result),
            "refs": sorted(standardized.metadata.refs),
            "published": wap.published_batches(standardized),
        }
    arrow, spark = outcomes["arrow"], outcomes["spark"]
    assert arrow["success"] is False and arrow["audit"]["stage"] == "schema"
    assert set(arrow["audit"]["fields"]) == {"coupon", "amount_minor"}
    assert arrow["audit"]["example_ids"] == {
        "coupon": [events[1]["event_id"]],
        "amount_minor": [events[6]["event_id"]],
    }
    assert arrow["refs"] == [] and arrow["published"] == []
    assert spark == arrow
