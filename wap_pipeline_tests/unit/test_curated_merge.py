from datetime import UTC, datetime, timedelta

import pyarrow as pa

from wap_pipeline.rules.curated import plan_merge

T0 = datetime(2026, 11, 28, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("idempotency_key", pa.string()),
        ("is_replay", pa.bool_()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("sent_timestamp", pa.timestamp("us", tz="UTC")),
        ("amount_minor", pa.int64()),
    ]
)


def rows(*items) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "idempotency_key": key,
                "is_replay": replay,
                "event_timestamp": T0 + timedelta(seconds=ts),
                "sent_timestamp": T0 + timedelta(seconds=sent),
                "amount_minor": amount,
            }
            for key, replay, ts, sent, amount in items
        ],
        schema=SCHEMA,
    )


def test_new_keys_are_inserted():
    plan = plan_merge(rows(("a", False, 1, 1, 10), ("b", False, 1, 1, 20)), SCHEMA.empty_table())
    assert (plan.inserted, plan.superseded, plan.skipped) == (2, 0, 0)
    assert sorted(plan.winners["idempotency_key"].to_pylist()) == ["a", "b"]


def test_duplicates_within_a_batch_keep_the_latest_and_count_as_skipped():
    plan = plan_merge(
        rows(("a", False, 1, 1, 10), ("a", False, 5, 5, 50), ("a", False, 5, 5, 50)), SCHEMA.empty_table()
    )
    assert (plan.inserted, plan.superseded, plan.skipped) == (1, 0, 2)
    assert plan.winners["amount_minor"].to_pylist() == [50]
    assert plan.accounted == 3


def test_replay_supersedes_the_original_even_if_older():
    current = rows(("a", False, 10, 10, 10))
    plan = plan_merge(rows(("a", True, 1, 20, 99)), current)
    assert (plan.inserted, plan.superseded, plan.skipped) == (0, 1, 0)
    assert plan.superseded_keys == ["a"]
    assert plan.winners["amount_minor"].to_pylist() == [99]


def test_redelivered_or_older_copies_are_skipped():
    current = rows(("a", False, 10, 10, 10), ("b", True, 1, 1, 1))
    plan = plan_merge(
        rows(("a", False, 10, 10, 10), ("a", False, 3, 30, 3), ("b", False, 50, 50, 5)), current
    )
    assert (plan.inserted, plan.superseded, plan.skipped) == (0, 0, 3)
    assert plan.winners.num_rows == 0


def test_later_event_supersedes_and_accounting_identity_holds():
    current = rows(("a", False, 1, 1, 1))
    batch = rows(("a", False, 2, 2, 2), ("c", False, 1, 1, 3), ("c", False, 1, 1, 3))
    plan = plan_merge(batch, current)
    assert (plan.inserted, plan.superseded, plan.skipped) == (1, 1, 1)
    assert plan.accounted == batch.num_rows
