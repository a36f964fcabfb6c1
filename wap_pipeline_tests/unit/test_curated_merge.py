from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from wap_pipeline.rules.curated import (
    INT64_MAX,
    DuplicateKeys,
    TotalsOverflowError,
    combine_key_counts,
    combine_totals,
    daily_totals,
    dedup_window,
    duplicate_keys,
    duplicates_of,
    event_days,
    final_totals,
    key_counts,
    partial_totals,
    plan_merge,
)

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


def event_rows(*items) -> pa.Table:
    """(key, event time, event_type, currency, amount) -> curated-like rows."""
    return pa.Table.from_pylist(
        [
            {
                "idempotency_key": key,
                "event_timestamp": when,
                "event_type": kind,
                "currency": currency,
                "amount_minor": amount,
            }
            for key, when, kind, currency, amount in items
        ],
        schema=pa.schema(
            [
                ("idempotency_key", pa.string()),
                ("event_timestamp", pa.timestamp("us", tz="UTC")),
                ("event_type", pa.string()),
                ("currency", pa.string()),
                ("amount_minor", pa.int64()),
            ]
        ),
    )


def test_dedup_window_covers_whole_days_around_the_batch():
    batch = event_rows(
        ("a", T0 + timedelta(hours=23, minutes=59), "x", "EUR", 1),
        ("b", T0 + timedelta(days=1, hours=1), "x", "EUR", 1),
    )
    window = dedup_window(batch, 2)
    assert window.start == T0 - timedelta(days=2)
    assert window.end == T0 + timedelta(days=4)
    assert len(window.days()) == 6
    assert dedup_window(batch.slice(0, 0), 2) is None


def test_daily_totals_group_by_utc_day_type_and_currency():
    totals = daily_totals(
        event_rows(
            ("a", T0 + timedelta(hours=1), "payment.captured", "EUR", 100),
            ("b", T0 + timedelta(hours=2), "payment.captured", "EUR", 250),
            ("c", T0 + timedelta(hours=3), "payment.refunded", "EUR", -50),
            ("d", T0 + timedelta(days=1), "payment.captured", "EUR", 7),
            ("e", T0 + timedelta(hours=4), "payment.captured", "USD", None),
        )
    )
    assert totals.to_pylist() == [
        {
            "event_date": T0.date(),
            "event_type": "payment.captured",
            "currency": "EUR",
            "events": 2,
            "amount_minor": 350,
        },
        {
            "event_date": T0.date(),
            "event_type": "payment.captured",
            "currency": "USD",
            "events": 1,
            "amount_minor": 0,
        },
        {
            "event_date": T0.date(),
            "event_type": "payment.refunded",
            "currency": "EUR",
            "events": 1,
            "amount_minor": -50,
        },
        {
            "event_date": (T0 + timedelta(days=1)).date(),
            "event_type": "payment.captured",
            "currency": "EUR",
            "events": 1,
            "amount_minor": 7,
        },
    ]
    assert daily_totals(event_rows()).num_rows == 0


_TOTALS_ROWS = st.lists(
    st.tuples(
        st.integers(0, 3),  # day
        st.sampled_from(["payment.captured", "payment.refunded", None]),
        st.sampled_from(["EUR", "USD", None]),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    ),
    max_size=40,
)


@given(
    st.lists(st.one_of(st.none(), st.sampled_from("abcdefghijklmnop")), max_size=60),
    st.lists(st.integers(0, 60), max_size=6),
    st.randoms(use_true_random=False),
)
@settings(max_examples=200, deadline=None)
def test_duplicates_counted_chunk_by_chunk_are_those_of_the_whole(keys, cuts, rng):
    """The uniqueness check streamed a data file at a time (key counts combined in any order and
    grouping) finds exactly what it finds in the keys held whole."""
    array = pa.array(keys, pa.large_string())
    bounds = sorted({0, len(array), *(c for c in cuts if c <= len(array))})
    parts = [key_counts(array.slice(a, b - a)) for a, b in zip(bounds, bounds[1:], strict=False)]
    rng.shuffle(parts)
    running = combine_key_counts([])
    for part in parts:
        running = combine_key_counts([running, part])
    assert duplicates_of(running, sample_size=4) == duplicate_keys(array, sample_size=4)
    assert duplicates_of(combine_key_counts(parts), 4) == duplicate_keys(array, 4)


@given(_TOTALS_ROWS, st.lists(st.integers(0, 40), max_size=5), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_totals_combined_from_chunks_are_the_totals_of_the_whole(items, cuts, rng):
    """The daily totals streamed chunk by chunk (partials combined in any order, then checked) are
    exactly those of the rows held whole -- overflow included: int64 extremes sum past int64 in a chunk."""
    rows = event_rows(
        *[
            (f"k{n}", T0 + timedelta(days=day, hours=n % 24), kind, cur, amount)
            for n, (day, kind, cur, amount) in enumerate(items)
        ]
    )
    bounds = sorted({0, rows.num_rows, *(c for c in cuts if c <= rows.num_rows)})
    partials = [partial_totals(rows.slice(a, b - a)) for a, b in zip(bounds, bounds[1:], strict=False)]
    rng.shuffle(partials)
    running = combine_totals([])
    for part in partials:  # as the arrow engine streams: one running total, one chunk at a time
        running = combine_totals([running, part])
    try:
        whole = daily_totals(rows)
    except TotalsOverflowError as error:
        try:
            final_totals(running)
        except TotalsOverflowError as streamed:
            assert sorted(map(str, streamed.groups)) == sorted(map(str, error.groups))
        else:
            raise AssertionError("the streamed totals did not declare the overflow") from None
        return
    assert final_totals(running).to_pylist() == whole.to_pylist()


def test_a_chunk_past_int64_is_fine_when_the_day_is_not():
    day = T0 + timedelta(hours=1)
    first = event_rows(("a", day, "t", "EUR", INT64_MAX), ("b", day, "t", "EUR", 10))
    second = event_rows(("c", day, "t", "EUR", -100))
    try:
        daily_totals(first)
    except TotalsOverflowError:
        pass
    else:
        raise AssertionError("the first chunk alone is beyond int64")
    totals = final_totals(combine_totals([partial_totals(first), partial_totals(second)]))
    assert totals.to_pylist() == [
        {
            "event_date": T0.date(),
            "event_type": "t",
            "currency": "EUR",
            "events": 3,
            "amount_minor": INT64_MAX - 90,
        }
    ]


def test_duplicate_keys_and_event_days():
    keys = pa.array(["b", "a", "b", "c", "b", "a"])
    assert duplicate_keys(keys) == DuplicateKeys(rows=6, keys=2, sample={"a": 2, "b": 3})
    assert duplicate_keys(pa.array(["x", "y"])) == DuplicateKeys(rows=2, keys=0, sample={})
    assert duplicate_keys(pa.array([], pa.large_string())) == DuplicateKeys(rows=0, keys=0, sample={})
    # The sample: the first keys in key order (the same whoever counted), nulls last.
    many = pa.array([f"k{n:02d}" for n in range(30, 0, -1)] * 2 + [None, None], pa.large_string())
    found = duplicate_keys(many, sample_size=3)
    assert (found.rows, found.keys, found.sample) == (62, 31, {"k01": 2, "k02": 2, "k03": 2})
    assert list(duplicate_keys(pa.array([None, "z", None, "z"])).sample) == ["z", None]
    rows = event_rows(
        ("a", T0, "x", "EUR", 1), ("b", T0 + timedelta(days=2), "x", "EUR", 1), ("c", T0, "x", "EUR", 1)
    )
    assert event_days(rows) == [T0.date(), (T0 + timedelta(days=2)).date()]


def test_a_later_resend_of_the_same_payload_is_skipped_not_rewritten():
    def with_payload(table: pa.Table, payloads: list[str]) -> pa.Table:
        return table.append_column("payload", pa.array(payloads))

    current = with_payload(rows(("a", False, 1, 1, 10), ("b", False, 1, 1, 20)), ['{"a":1}', '{"b":1}'])
    incoming = with_payload(
        rows(("a", False, 1, 5, 10), ("b", False, 1, 5, 21), ("a", True, 1, 6, 10)),
        ['{"a":1}', '{"b":2}', '{"a":1}'],
    )
    plan = plan_merge(incoming.slice(0, 2), current)
    assert (plan.inserted, plan.superseded, plan.skipped) == (0, 1, 1)
    assert plan.superseded_keys == ["b"]
    replay = plan_merge(incoming.slice(2, 1), current)
    assert (replay.superseded, replay.skipped) == (1, 0), "a replay supersedes even an identical payload"


_COPIES = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", None]),
        st.booleans(),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 1_000_000),
    ),
    max_size=40,
)


def _as_rows(table: pa.Table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


@given(_COPIES)
@settings(max_examples=200, deadline=None)
def test_the_winner_of_each_key_is_what_a_full_sort_by_precedence_picks(copies):
    """Only repeated keys are sorted: the result is the first row per key of the whole batch
    sorted by key and precedence (keyless rows each stand alone), whatever the mix."""
    batch = rows(*copies)
    everything_sorted = batch.sort_by(
        [
            ("idempotency_key", "ascending"),
            ("is_replay", "descending"),
            ("event_timestamp", "descending"),
            ("sent_timestamp", "descending"),
        ]
    )
    expected, previous = [], object()
    for row in everything_sorted.to_pylist():
        if row["idempotency_key"] is None or row["idempotency_key"] != previous:
            expected.append(row)
        previous = row["idempotency_key"]

    plan = plan_merge(batch, SCHEMA.empty_table())

    assert _as_rows(plan.winners) == _as_rows(pa.Table.from_pylist(expected, schema=SCHEMA))
    assert plan.inserted + plan.skipped == len(copies)


def test_the_plan_matches_a_row_by_row_definition_on_a_mixed_batch():
    """plan_merge orders and joins narrow columns and takes the winners' rows at the end: the
    outcome must be what the precedence rules say, row for row (payloads included)."""
    import random

    rng = random.Random(5)
    keys = [f"k{i}" for i in range(40)]

    def copy(key: str) -> dict:
        return {
            "idempotency_key": key,
            "is_replay": rng.random() < 0.2,
            "event_timestamp": T0 + timedelta(seconds=rng.randrange(3)),
            "sent_timestamp": T0 + timedelta(seconds=rng.randrange(3)),
            "amount_minor": rng.randrange(3),
            "payload": f"p{rng.randrange(2)}",
        }

    schema = SCHEMA.append(pa.field("payload", pa.large_string()))
    current = [copy(k) for k in keys[:25]]
    batch = [copy(rng.choice(keys)) for _ in range(120)]
    plan = plan_merge(pa.Table.from_pylist(batch, schema), pa.Table.from_pylist(current, schema))

    def rank(row: dict) -> tuple:
        return (row["is_replay"], row["event_timestamp"], row["sent_timestamp"])

    by_key: dict[str, list[dict]] = {}
    for row in batch:
        by_key.setdefault(row["idempotency_key"], []).append(row)
    existing = {row["idempotency_key"]: row for row in current}
    expected, superseded = {}, []
    for key, copies in by_key.items():
        best = max(copies, key=rank)  # ties: any of the equal-ranked copies
        old = existing.get(key)
        if old is None:
            expected[key] = best
        elif rank(best) > rank(old) and not (
            best["is_replay"] == old["is_replay"] and best["payload"] == old["payload"]
        ):
            expected[key] = best
            superseded.append(key)
    assert sorted(plan.superseded_keys) == sorted(superseded)
    assert (plan.inserted, plan.superseded) == (len(expected) - len(superseded), len(superseded))
    assert plan.accounted == len(batch)
    winners = {row["idempotency_key"]: row for row in plan.winners.to_pylist()}
    assert set(winners) == set(expected)
    for key, row in winners.items():
        assert rank(row) == rank(expected[key])
