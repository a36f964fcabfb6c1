"""Compaction of curated's day partitions: fewer files, the same rows, invisible to the batch bookkeeping."""

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from wap_pipeline.engines.arrow import ArrowEngine
from wap_pipeline.iceberg import compaction, wap
from wap_pipeline.iceberg.compaction import COMPACTION_PROPERTY, compact_days, small_files_by_day

DAY0 = datetime(2026, 10, 1, 12, tzinfo=UTC)


def batch_rows(table, batch: int, days: list[int], per_day: int = 4) -> pa.Table:
    rows = []
    for day in days:
        when = DAY0 + timedelta(days=day, minutes=batch)
        rows += [
            {
                "idempotency_key": f"k-{batch}-{day}-{n}",
                "event_timestamp": when,
                "payload": f'{{"n": {n}}}',
                "batch_id": f"b{batch}",
                "is_replay": False,
                "curated_at": when,
            }
            for n in range(per_day)
        ]
    return pa.Table.from_pylist(rows, schema=table.schema().as_arrow())


def merge(table, batch: int, days: list[int]) -> None:
    """A curated-like commit: the batch's rows, with its id and accounting in the summary."""
    table.append(
        batch_rows(table, batch, days),
        snapshot_properties={
            wap.BATCH_ID_PROPERTY: f"b{batch}",
            wap.CURATED_TOTAL_BEFORE: str(wap.row_count(table)),
        },
    )


def content(table) -> list[dict]:
    rows = table.scan().to_arrow()
    return rows.sort_by([("idempotency_key", "ascending")]).to_pylist()


def day(n: int) -> date:
    return (DAY0 + timedelta(days=n)).date()


def test_compaction_rewrites_only_days_with_enough_files_and_keeps_every_row(curated):
    for batch in range(1, 7):
        merge(curated, batch, [0, 1] if batch <= 5 else [1])  # day 0: 5 files, day 1: 6 files
    merge(curated, 7, [2])  # day 2: 1 file
    before = content(curated)
    total_before = wap.row_count(curated)
    head_before = curated.current_snapshot()

    result = compact_days(curated, [day(0), day(1), day(2)], min_files=6)

    assert result.days == [day(1)]
    assert (result.files_before, result.files_after, result.rows) == (6, 1, 24)
    curated.refresh()
    assert content(curated) == before
    assert wap.row_count(curated) == total_before
    files = small_files_by_day(curated, [day(0), day(1), day(2)])
    assert {d: len(tasks) for d, tasks in files.items()} == {day(0): 5, day(1): 1, day(2): 1}
    head = curated.current_snapshot()
    assert head.parent_snapshot_id == head_before.snapshot_id
    assert head.summary[COMPACTION_PROPERTY] == day(1).isoformat()
    assert wap.BATCH_ID_PROPERTY not in head.summary.additional_properties
    assert head.summary["total-records"] == head_before.summary["total-records"]


def test_a_compaction_commit_is_invisible_to_the_batch_bookkeeping(curated):
    for batch in range(1, 5):
        merge(curated, batch, [0])
    assert ArrowEngine().compact_days(curated, [day(0)], min_files=4).files_before == 4
    # The batch's own commit is still the one found: "already merged?", its accounting, status.
    assert wap.published_batches(curated) == ["b1", "b2", "b3", "b4"]
    last = wap.batch_snapshots(curated, "b4")
    assert len(last) == 1
    summary = last[-1].summary
    assert int(summary["total-records"]) - int(summary[wap.CURATED_TOTAL_BEFORE]) == 4
    assert wap.published_snapshot(curated, "b1") is not None
    assert wap.batch_snapshots(curated, "b9") == []
    # A later batch still merges on top, and keys stay unique.
    merge(curated, 5, [0])
    keys = curated.scan(selected_fields=("idempotency_key",)).to_arrow()["idempotency_key"]
    assert len(keys) == 20 == len(pc.unique(keys))
    assert wap.published_batches(curated)[-1] == "b5"


def test_compaction_is_off_below_two_files_and_a_no_op_without_small_files(curated):
    for batch in range(1, 4):
        merge(curated, batch, [0])
    head = curated.current_snapshot().snapshot_id
    assert compact_days(curated, [day(0)], min_files=0).days == []
    assert compact_days(curated, [day(0)], min_files=4).days == []
    assert compact_days(curated, [day(5)], min_files=2).days == []
    curated.refresh()
    assert curated.current_snapshot().snapshot_id == head


def test_size_tiers_grow_by_the_fanout():
    floor = compaction.TIER_FLOOR_BYTES
    assert [compaction.size_tier(size, 8) for size in (0, floor - 1, floor, 8 * floor - 1, 8 * floor)] == [
        0,
        0,
        1,
        1,
        2,
    ]


def test_a_compacted_file_is_not_rewritten_with_every_new_batch(curated, monkeypatch):
    """Size tiers: the files a compaction wrote wait for files of their own size; new batches' small
    files are compacted among themselves (a day's rewrite cost does not grow with its history)."""
    merge(curated, 1, [0])
    one_file = curated.scan().plan_files().__iter__().__next__().file.file_size_in_bytes
    monkeypatch.setattr(compaction, "TIER_FLOOR_BYTES", one_file + 1)  # a batch's file: tier 0
    for batch in range(2, 5):
        merge(curated, batch, [0])
    first = compact_days(curated, [day(0)], min_files=4)
    assert (first.files_before, first.files_after) == (4, 1)
    for batch in range(5, 8):
        merge(curated, batch, [0])
    assert compact_days(curated, [day(0)], min_files=4).days == []  # 3 new small files + 1 of tier 1
    merge(curated, 8, [0])
    second = compact_days(curated, [day(0)], min_files=4)
    assert (second.files_before, second.files_after, second.rows) == (4, 1, 16), "only the new tier-0 files"
    curated.refresh()
    assert len(small_files_by_day(curated, [day(0)])[day(0)]) == 2
    assert wap.row_count(curated) == 32 == curated.scan().to_arrow().num_rows


def test_a_merge_planned_on_an_old_head_is_refused_not_rebased(catalog, curated):
    """Two writers each plan key K as new; the second commit must fail (its step re-plans), never
    be rebuilt on the first one's head -- PyIceberg's own retry would commit K twice."""
    import pytest
    from pyiceberg.exceptions import CommitFailedException

    from wap_pipeline.iceberg.schemas import CURATED_TABLE
    from wap_pipeline.rules.curated import dedup_window, plan_merge

    assert curated.properties["commit.retry.num-retries"] == "0"
    first, second = catalog.load_table(CURATED_TABLE), catalog.load_table(CURATED_TABLE)
    batch = batch_rows(curated, 1, [0])
    plans = [plan_merge(batch, writer.scan().to_arrow()) for writer in (first, second)]
    assert [plan.inserted for plan in plans] == [4, 4], "both planned every key as new"
    window = dedup_window(batch, 7)
    ArrowEngine().commit_merge(first, plans[0], window, {wap.BATCH_ID_PROPERTY: "b1"})
    with pytest.raises(CommitFailedException):
        ArrowEngine().commit_merge(second, plans[1], window, {wap.BATCH_ID_PROPERTY: "b1-again"})
    keys = curated.refresh().scan().to_arrow()["idempotency_key"].to_pylist()
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4
