"""Maintenance over a real SQLite catalog: what it expires, what it keeps, which files are orphans."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyarrow.fs import FileSelector, FileType, LocalFileSystem

from wap_pipeline.iceberg import maintenance, wap
from wap_pipeline.iceberg.schemas import RAW_SCHEMA, create_tables
from wap_pipeline.operations.maintenance import LAYERS, maintain
from wap_pipeline_tests import wap_cases

KNOWN = ["b1", "b2", "b3"]


def _far_future_ms() -> int:
    return int((datetime.now(UTC) + timedelta(days=1)).timestamp() * 1000)


def test_expiry_keeps_the_head_the_ledger_carrier_and_every_branch_head(catalog):
    table = create_tables(catalog)["raw"]
    for batch in KNOWN:
        wap_cases.publish(table, batch, 2, KNOWN)
    for _ in range(2):  # other commits on top of the last batch: a compaction, another writer
        table.append(table.schema().as_arrow().empty_table(), snapshot_properties={"wap.compaction": "x"})
    expired = maintenance.expire_snapshots(table, _far_future_ms())
    table.refresh()
    kept = {s.snapshot_id for s in table.metadata.snapshots}
    assert expired and not kept & set(expired)
    assert table.current_snapshot().snapshot_id in kept
    assert wap.ledger_snapshot(table).snapshot_id in kept, (
        "the head carries no ledger: the chain to it is kept"
    )
    assert {ref.snapshot_id for ref in table.metadata.refs.values()} <= kept
    assert all(wap.is_published(table, b) for b in KNOWN)


def test_orphans_are_unreferenced_files_past_the_margin_and_deleting_them_loses_no_row(catalog, tmp_path):
    table = create_tables(catalog)["raw"]
    for batch in KNOWN:
        wap_cases.publish(table, batch, 3, KNOWN)
    maintenance.remove_branches(table, maintenance.published_branches(table))
    maintenance.expire_snapshots(table, _far_future_ms())
    root = Path(table.location().removeprefix("file://"))
    planted = root / "data" / "left-by-a-failed-write.parquet"
    planted.write_bytes(b"not referenced")
    # Margins relative to the files' own times as the orphan listing (pyarrow) sees them, never the
    # clock: the suite also runs under libfaketime, which shifts the clock but not what pyarrow reads.
    listed = LocalFileSystem().get_file_info(FileSelector(str(root), recursive=True))
    mtimes = [info.mtime.timestamp() for info in listed if info.type == FileType.File]
    younger_than_all, older_than_all = int((min(mtimes) - 1) * 1000), int((max(mtimes) + 1) * 1000)
    assert maintenance.orphan_files(table, younger_than_all) == [], "within the margin: never an orphan"
    orphans = dict(maintenance.delete_orphan_files(table, older_than_all))
    assert f"file://{planted}" in orphans and not planted.exists()
    assert not any(location.endswith(table.metadata_location.rsplit("/", 1)[1]) for location in orphans)
    assert table.refresh().scan().to_arrow().num_rows == 9
    assert maintenance.orphan_files(table, older_than_all) == []


def test_a_batch_the_next_layer_has_not_taken_holds_expiry_back(catalog):
    # Four layers of one schema (the rows do not matter here, only which batches each holds).
    catalog.create_namespace("layers")
    tables = {layer: catalog.create_table(("layers", layer), RAW_SCHEMA) for layer in LAYERS}
    for batch in KNOWN:
        wap_cases.publish(tables["raw"], batch, 1, KNOWN)
    wap_cases.publish(tables["standardized"], "b1", 1, KNOWN)  # b2, b3 wait for standardized
    now = datetime.now(UTC) + timedelta(days=1)
    report = maintain(tables, lambda low: [k for k in KNOWN if k > low], now, older_than=timedelta(0))
    raw = next(t for t in report.tables if t.table == "layers.raw")
    assert raw.held_by == "b2"
    assert wap.published_snapshot(tables["raw"].refresh(), "b2") is not None
    assert wap.published_snapshot(tables["raw"], "b3") is not None


def test_a_table_without_a_ledger_gets_one_before_its_history_is_expired(catalog):
    table = create_tables(catalog)["raw"]
    for batch in ("b1", "b2"):
        wap_cases.publish(table, batch, 2)  # commits of a version that carried no ledger
    table.append(table.schema().as_arrow().empty_table(), snapshot_properties={"other.writer": "1"})
    maintenance.remove_branches(table, [n for n in table.metadata.refs if n != wap.MAIN])
    assert maintenance.expire_snapshots(table, _far_future_ms())
    assert wap.ledger(table) == wap.Ledger(batches=frozenset({"b1", "b2"}))
    assert len(table.refresh().metadata.snapshots) == 1


def test_a_table_with_only_empty_commits_has_no_orphans_and_can_be_expired(catalog):
    table = create_tables(catalog)["curated"]
    for _ in range(3):
        table.append(table.schema().as_arrow().empty_table(), snapshot_properties={"other.writer": "1"})
    assert maintenance.expire_snapshots(table, _far_future_ms())
    assert not wap.is_published(table, "b1")
    assert maintenance.orphan_files(table, int(time.time() * 1000) - 3600_000) == []
