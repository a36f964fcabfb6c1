"""Write-Audit-Publish scenarios run against every catalog kind (SQLite, PostgreSQL, Glue)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException

from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import RAW_SCHEMA, create_tables

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def raw_batch(batch_id: str, n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "batch_id": batch_id,
                "landing_file_key": f"landing/{batch_id}",
                "line_number": i,
                "message_id": f"{batch_id}-{i}",
                "is_replay": False,
                "body": "{}",
                "ingested_at": NOW,
            }
            for i in range(n)
        ],
        schema=RAW_SCHEMA.as_arrow(),
    )


def write_to_branch(table, name: str, rows: pa.Table, properties: dict[str, str]) -> None:
    """Append ``rows`` to the existing branch ``name`` in one commit, with ``properties`` in the
    snapshot summary (the assets write a new branch in one go: ``wap.write_new_branch``)."""
    table.refresh()
    if name not in table.metadata.refs:
        raise ValueError(f"branch {name} does not exist; create it from main first")
    with wap.StagedAppend(table) as staged:
        staged.write_all([rows]).commit(properties, branch=name)


def publish(table, batch_id: str, n: int, known: list[str] | None = None) -> str:
    """Write-audit-publish ``n`` rows of ``batch_id``; with ``known`` (every batch id that exists, as
    the manifests would list them) the commit carries the ledger, as the assets' commits do."""
    branch = wap.next_branch_name(table, batch_id)
    wap.create_branch_from_main(table, branch)
    ledger = {} if known is None else wap.ledger_properties(table, batch_id, lambda low: known)
    write_to_branch(
        table,
        branch,
        raw_batch(batch_id, n),
        {wap.BATCH_ID_PROPERTY: batch_id, wap.BOOKMARK_PROPERTY: f"k-{batch_id}", **ledger},
    )
    wap.fast_forward(table, branch)
    return branch


def full_cycle(catalog: Catalog) -> None:
    """Branch, write, audit-read, fast-forward, bookmark; main untouched until publish."""
    table = create_tables(catalog)["raw"]
    branch = wap.next_branch_name(table, "b1")
    assert branch == "audit_batch_b1"
    wap.create_branch_from_main(table, branch)
    write_to_branch(
        table, branch, raw_batch("b1", 5), {wap.BATCH_ID_PROPERTY: "b1", wap.BOOKMARK_PROPERTY: "k1"}
    )
    assert wap.scan_batch(table, wap.MAIN, "b1").num_rows == 0, "main must not see the branch before publish"
    assert wap.scan_batch(table, branch, "b1").num_rows == 5
    wap.fast_forward(table, branch)
    assert wap.scan_batch(table, wap.MAIN, "b1").num_rows == 5
    assert wap.bookmark(table) == {"batch_id": "b1", "bookmark": "k1"}

    publish(table, "b2", 3)
    reloaded = catalog.load_table(("raw", "events"))
    assert wap.published_batches(reloaded) == ["b1", "b2"]
    assert wap.bookmark(reloaded) == {"batch_id": "b2", "bookmark": "k-b2"}
    assert wap.published_snapshot(reloaded, "b1") is not None
    assert wap.published_snapshot(reloaded, "b3") is None
    assert reloaded.scan().to_arrow().num_rows == 8


def refuses_when_main_moved(catalog: Catalog) -> None:
    """Another writer publishes between our branch creation and our publish: refuse, lose nothing."""
    table = create_tables(catalog)["raw"]
    publish(table, "b1", 2)
    ours = wap.next_branch_name(table, "b2")
    wap.create_branch_from_main(table, ours)
    write_to_branch(table, ours, raw_batch("b2", 4), {wap.BATCH_ID_PROPERTY: "b2"})

    other_writer = catalog.load_table(("raw", "events"))
    publish(other_writer, "b3", 1)
    main_before = catalog.load_table(("raw", "events")).current_snapshot().snapshot_id

    with pytest.raises(wap.NotFastForwardError):
        wap.fast_forward(table, ours)
    after = catalog.load_table(("raw", "events"))
    assert after.current_snapshot().snapshot_id == main_before
    assert wap.published_batches(after) == ["b1", "b3"]

    # The retry writes a NEW branch from main's new head and publishes correctly.
    retry = wap.next_branch_name(after, "b2")
    assert retry == "audit_batch_b2_retry_1"
    wap.create_branch_from_main(after, retry)
    write_to_branch(after, retry, raw_batch("b2", 4), {wap.BATCH_ID_PROPERTY: "b2"})
    wap.fast_forward(after, retry)
    final = catalog.load_table(("raw", "events"))
    assert wap.published_batches(final) == ["b1", "b3", "b2"]
    assert final.scan().to_arrow().num_rows == 2 + 1 + 4


def stale_handle_cannot_discard_a_concurrent_commit(catalog: Catalog) -> None:
    """Even past the ancestry check, the ref update carries the compare-and-swap on main."""
    table = create_tables(catalog)["raw"]
    publish(table, "b1", 1)
    branch = wap.next_branch_name(table, "b2")
    wap.create_branch_from_main(table, branch)
    write_to_branch(table, branch, raw_batch("b2", 1), {wap.BATCH_ID_PROPERTY: "b2"})
    stale = catalog.load_table(("raw", "events"))
    publish(catalog.load_table(("raw", "events")), "b3", 1)
    head = stale.metadata.snapshot_by_id(stale.metadata.refs[branch].snapshot_id)
    with pytest.raises(CommitFailedException):
        stale.manage_snapshots().set_current_snapshot(snapshot_id=head.snapshot_id).commit()
    assert wap.published_batches(catalog.load_table(("raw", "events"))) == ["b1", "b3"]
