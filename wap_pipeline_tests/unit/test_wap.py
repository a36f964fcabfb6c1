import pytest
from pyiceberg.catalog import load_catalog

from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import ensure_tables
from wap_pipeline_tests import wap_cases


@pytest.fixture
def catalog(tmp_path):
    return load_catalog(
        "test", type="sql", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}"
    )


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
    table = ensure_tables(catalog)["curated"]
    head = wap.create_branch_from_main(table, "audit_batch_x")
    assert table.current_snapshot().snapshot_id == head
    assert table.metadata.refs["audit_batch_x"].snapshot_id == head


def test_abandoned_branches_are_kept_until_their_retention_passes(catalog):
    table = ensure_tables(catalog)["raw"]
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
    table = ensure_tables(catalog)["raw"]
    wap_cases.publish(table, "b1", 1)
    published = wap.branch_name("b1")
    died = wap.next_branch_name(table, "b2")
    wap.create_branch_from_main(table, died)  # its run was killed after the write, before the audit
    wap.write_to_branch(table, died, wap_cases.raw_batch("b2", 2), {wap.BATCH_ID_PROPERTY: "b2"})
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
