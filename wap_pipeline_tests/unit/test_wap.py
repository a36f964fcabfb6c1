import pytest

from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import create_tables
from wap_pipeline_tests import wap_cases


def test_branch_names():
    assert wap.branch_name("20261128T120000000Z-000") == "audit_batch_20261128T120000000Z-000"
    assert wap.branch_name("b1", 2) == "audit_batch_b1_retry_2"
    for bad in ("", "../x", "a b", "x" * 129):
        with pytest.raises(ValueError):
            wap.branch_name(bad)


def test_full_cycle(catalog):
    wap_cases.full_cycle(catalog)


def test_fast_forward_refuses_when_main_moved(catalog):
    wap_cases.refuses_when_main_moved(catalog)


def test_stale_handle_cannot_discard_a_concurrent_commit(catalog):
    wap_cases.stale_handle_cannot_discard_a_concurrent_commit(catalog)


def test_branch_of_an_empty_table_has_main_as_parent(catalog):
    table = create_tables(catalog)["curated"]
    head = wap.create_branch_from_main(table, "audit_batch_x")
    assert table.current_snapshot().snapshot_id == head
    assert table.metadata.refs["audit_batch_x"].snapshot_id == head


def test_abandoned_branches_are_kept_until_their_retention_passes(catalog):
    table = create_tables(catalog)["raw"]
    wap_cases.publish(table, "b1", 1)
    failed = wap.next_branch_name(table, "b2")
    wap.create_branch_from_main(table, failed)
    wap.abandon_branch(table, failed, "audit failed", retention_ms=60_000)
    assert wap.remove_expired_branches(table) == []
    assert failed in table.metadata.refs
    expired = wap.remove_expired_branches(table, now_ms=2**62)
    assert expired == [failed]
    table.refresh()
    assert failed not in table.metadata.refs
    assert not any(k.startswith(wap.ABANDONED_PROPERTY_PREFIX) for k in table.metadata.properties)
    assert wap.published_batches(table) == ["b1"]


def test_branches_of_runs_that_died_are_removed_after_the_retention(catalog):
    table = create_tables(catalog)["raw"]
    wap_cases.publish(table, "b1", 1)
    published = wap.branch_name("b1")
    died = wap.next_branch_name(table, "b2")
    wap.create_branch_from_main(table, died)  # its run was killed after the write, before the audit
    wap_cases.write_to_branch(table, died, wap_cases.raw_batch("b2", 2), {wap.BATCH_ID_PROPERTY: "b2"})
    never_written = wap.next_branch_name(table, "b3")
    wap.create_branch_from_main(table, never_written)  # killed right after creating it
    day_ms = 24 * 3600_000
    assert wap.remove_expired_branches(table, unfinished_retention_ms=day_ms) == [], "too recent"
    assert wap.remove_expired_branches(table, now_ms=2**62) == [], "only with a retention for them"
    removed = wap.remove_expired_branches(table, now_ms=2**62, unfinished_retention_ms=day_ms)
    assert sorted(removed) == sorted([died, never_written])
    table.refresh()
    assert died not in table.metadata.refs and never_written not in table.metadata.refs
    assert published in table.metadata.refs, "a published branch is kept"
    assert wap.published_batches(table) == ["b1"]


def _data_files_on_disk(tmp_path) -> set[str]:
    return {str(p) for p in tmp_path.rglob("*.parquet")}


def test_a_chunked_append_is_one_snapshot_identical_to_a_single_append(catalog):
    chunked = create_tables(catalog)["raw"]
    single = catalog.create_table(("raw", "twin"), schema=chunked.schema(), partition_spec=chunked.spec())
    rows = wap_cases.raw_batch("b1", 10)
    properties = {wap.BATCH_ID_PROPERTY: "b1", wap.BOOKMARK_PROPERTY: "k1"}
    with wap.StagedAppend(chunked) as staged:
        staged.write_all([rows.slice(0, 3), rows.slice(3, 0), rows.slice(3, 4), rows.slice(7)])
        assert chunked.refresh().current_snapshot() is None, "nothing is committed while chunks are written"
        staged.commit(properties)
    single.append(rows, snapshot_properties=properties)

    snapshots = chunked.refresh().snapshots()
    assert len(snapshots) == 1, "one commit for the batch"
    summary = snapshots[0].summary
    assert summary.operation.value == "append"
    assert {k: summary[k] for k in properties} == properties
    assert summary["added-records"] == summary["total-records"] == "10"
    assert staged.rows == 10 and len(staged.data_files) == 3
    key = [("line_number", "ascending")]
    assert chunked.scan().to_arrow().sort_by(key) == single.refresh().scan().to_arrow().sort_by(key)
    assert wap.published_snapshot(chunked, "b1").snapshot_id == snapshots[0].snapshot_id


def test_a_failure_between_chunks_commits_nothing_and_removes_the_files(catalog, tmp_path):
    table = create_tables(catalog)["raw"]
    wap_cases.publish(table, "b0", 2)
    head = table.refresh().current_snapshot().snapshot_id
    before = _data_files_on_disk(tmp_path)

    def chunks():
        yield wap_cases.raw_batch("b1", 3)
        yield wap_cases.raw_batch("b1", 4)
        raise RuntimeError("the reader died")

    with pytest.raises(RuntimeError, match="reader died"), wap.StagedAppend(table) as staged:
        staged.write_all(chunks())
        staged.commit({wap.BATCH_ID_PROPERTY: "b1"})
    assert table.refresh().current_snapshot().snapshot_id == head
    assert len(table.snapshots()) == 2, "no snapshot was added"
    assert wap.published_batches(table) == ["b0"]
    assert _data_files_on_disk(tmp_path) == before, "the chunks' files are deleted"


def test_a_new_branch_is_created_only_after_its_last_chunk(catalog):
    table = create_tables(catalog)["raw"]
    wap_cases.publish(table, "b0", 2)
    name = wap.next_branch_name(table, "b1")

    def failing():
        yield wap_cases.raw_batch("b1", 3)
        raise ValueError("schema mismatch in chunk 2")

    with pytest.raises(ValueError, match="chunk 2"):
        wap.write_new_branch(table, name, failing(), lambda: {wap.BATCH_ID_PROPERTY: "b1"})
    assert name not in table.refresh().metadata.refs, "no branch, no commit"

    found = {"rows": 0}

    def chunks():
        for n in (3, 4):
            found["rows"] += n
            yield wap_cases.raw_batch("b1", n)

    written = wap.write_new_branch(
        table, name, chunks(), lambda: {wap.BATCH_ID_PROPERTY: "b1", "counted": str(found["rows"])}
    )
    assert written == 7
    head = table.refresh().metadata.snapshot_by_name(name)
    assert head.parent_snapshot_id == table.current_snapshot().snapshot_id, "one commit on main's head"
    assert head.summary["counted"] == "7", "the summary is computed after the last chunk"
    assert wap.scan_batch(table, name, "b1").num_rows == 7
    assert sum(c.num_rows for c in wap.scan_batch_chunks(table, name, "b1")) == 7
    assert wap.scan_batch(table, wap.MAIN, "b1").num_rows == 0


def test_a_batch_reference_time_is_read_from_raw_commit_or_else_the_commit_time(catalog):
    from datetime import UTC, datetime

    table = create_tables(catalog)["raw"]
    landed = datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)
    table.append(
        wap_cases.raw_batch("b1", 1), snapshot_properties={wap.LANDED_AT_PROPERTY: landed.isoformat()}
    )
    assert wap.landed_at(table.current_snapshot()) == landed
    table.append(wap_cases.raw_batch("b2", 1))  # a commit from before the landing time was recorded
    committed = table.current_snapshot()
    assert wap.landed_at(committed) == datetime.fromtimestamp(committed.timestamp_ms / 1000, tz=UTC)


def test_the_ledger_advances_its_watermark_over_the_known_batches_it_holds():
    known = ["b1", "b2", "b3", "b4"]
    ledger = wap.Ledger().with_batch("b2", known)
    assert (ledger.low, ledger.batches) == ("", {"b2"}), "b1 is not held: no watermark yet"
    ledger = ledger.with_batch("b1", known)
    assert (ledger.low, ledger.batches) == ("b2", frozenset())
    ledger = ledger.with_batch("b4", known[2:])
    assert (ledger.low, ledger.batches) == ("b2", {"b4"})
    assert "b1" in ledger and "b2" in ledger and "b4" in ledger and "b3" not in ledger
    assert "b5" not in ledger.with_batch("b6", known), "an id nobody listed is never assumed"
    assert wap.Ledger.from_summary(ledger.properties()) == ledger


def _remove_audit_branches(table) -> None:
    for name in [n for n in table.metadata.refs if n != wap.MAIN]:
        table.manage_snapshots().remove_branch(name).commit()


def _expire_all_but_the_heads(table) -> None:
    table.refresh()
    heads = {ref.snapshot_id for ref in table.metadata.refs.values()}
    table.maintenance.expire_snapshots().by_ids(
        [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in heads]
    ).commit()
    table.refresh()


def test_a_table_without_a_ledger_derives_it_from_history_and_refuses_once_history_is_gone(catalog):
    table = create_tables(catalog)["raw"]
    for batch in ("b1", "b2", "b3"):
        wap_cases.publish(table, batch, 2)  # commits of a version that carried no ledger
    assert wap.ledger(table) == wap.Ledger(batches=frozenset({"b1", "b2", "b3"}))
    _remove_audit_branches(table)
    _expire_all_but_the_heads(table)
    with pytest.raises(wap.LedgerLostError):
        wap.is_published(table, "b1")
    assert "b1" not in wap.ledger(table, lost_ok=True), "lost_ok starts from what is left"


def test_expiring_every_snapshot_but_the_head_changes_no_decision(catalog):
    table = create_tables(catalog)["raw"]
    known = ["b1", "b2", "b3", "b4", "b5"]  # b4 exists but failed: the watermark stops below it
    for batch in ("b1", "b2", "b3", "b5"):
        wap_cases.publish(table, batch, 2, known)
    assert wap.ledger(table) == wap.Ledger("b3", frozenset({"b5"}))
    before = {batch: wap.is_published(table, batch) for batch in ["b0", *known, "b6"]}
    assert before == {"b0": True, "b1": True, "b2": True, "b3": True, "b5": True, "b4": False, "b6": False}
    _remove_audit_branches(table)
    _expire_all_but_the_heads(table)
    assert len(table.metadata.snapshots) == 1
    assert {batch: wap.is_published(table, batch) for batch in before} == before
