"""Curated's layout keeps a batch's lookups to its own days: the scan plans only those files."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from wap_pipeline.iceberg.filters import window_filter
from wap_pipeline.rules.curated import dedup_window

DAY0 = datetime(2026, 10, 1, 12, tzinfo=UTC)


def day_rows(table, day: int, count: int) -> pa.Table:
    when = DAY0 + timedelta(days=day)
    return pa.Table.from_pylist(
        [
            {
                "idempotency_key": f"k-{day}-{n}",
                "event_timestamp": when,
                "batch_id": f"b{day}",
                "is_replay": False,
            }
            | {"curated_at": when}
            for n in range(count)
        ],
        schema=table.schema().as_arrow(),
    )


def test_a_batch_scan_plans_only_the_files_of_its_window(curated):
    for day in range(60):  # two months of history, one append per day
        curated.append(day_rows(curated, day, 5))
    batch = day_rows(curated, 59, 3)
    window = dedup_window(batch, window_days=7)
    planned = list(curated.scan(row_filter=window_filter(window)).plan_files())
    # Days 52..59 are in the window (7 before the batch's day, the day itself; none after yet).
    assert len(planned) == 8
    rows = curated.scan(row_filter=window_filter(window)).to_arrow()
    assert rows.num_rows == 40
    assert len(list(curated.scan().plan_files())) == 60
