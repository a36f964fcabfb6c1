"""Curated merge planning: one row per idempotency_key.

Precedence between two copies of a key: a replay beats an original; then the later
event_timestamp; then the later sent_timestamp. A copy that does not beat the current row is a
duplicate and is skipped -- and so is a copy with the same replay flag and the same payload as the
current row (a producer's re-send): rewriting a row with itself would cost a file rewrite for nothing. Every standardized row of a batch is counted exactly once as inserted,
superseded (it replaced a curated row) or skipped -- the accounting identity the curated check uses.

Why the cost of a batch does not grow with the table: curated is partitioned by day of
event_timestamp, and a batch looks for earlier copies of its keys only in the *deduplication window*,
the days of its own events widened by ``window_days`` on each side. Every copy of an event (SQS
redelivery, re-drive, a patched replay) carries the same event_timestamp, so it is always found; a
correction (same key, new event_timestamp) is found when it comes within the window of the copy it
corrects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEY = "idempotency_key"
EVENT_TIME = "event_timestamp"
PAYLOAD = "payload"
_PRECEDENCE = (
    ("is_replay", "descending"),
    ("event_timestamp", "descending"),
    ("sent_timestamp", "descending"),
)


@dataclass(frozen=True)
class MergePlan:
    rows: pa.Table
    """The batch's rows the plan was made from."""
    winner_rows: pa.Array
    """Indices into ``rows`` of the rows to write: new keys and keys whose curated row they supersede.
    Indices, not a copy: a writer can take the winners a bounded piece at a time."""
    superseded_keys: list[str]
    """Keys whose current curated row is replaced (delete, then insert the winner)."""
    inserted: int
    superseded: int
    skipped: int

    @property
    def accounted(self) -> int:
        return self.inserted + self.superseded + self.skipped

    @property
    def winners(self) -> pa.Table:
        """The rows to write, as one table (a copy of them)."""
        return self.rows.take(self.winner_rows)

    def winners_of(self, columns: list[str]) -> pa.Table:
        """Some columns of the winners, without copying the others."""
        return self.rows.select(columns).take(self.winner_rows)


_ROW = "_row"


def _indices(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks else pa.array([], pa.int64())


def _first_per_key(rows: pa.Table) -> pa.Table:
    """The highest-precedence row of each key.

    Most keys occur once in a batch: only the rows of repeated keys are sorted (a sort of the whole
    batch by four columns was the larger part of the curated step). A row without a key stands alone.
    """
    if rows.num_rows == 0:
        return rows
    counts = pc.value_counts(rows[KEY])
    repeated = counts.field("values").filter(
        pc.and_(pc.greater(counts.field("counts"), 1), pc.is_valid(counts.field("values")))
    )
    if len(repeated) == 0:
        return rows
    in_repeated = pc.is_in(rows[KEY], value_set=repeated, skip_nulls=True)
    return pa.concat_tables([rows.filter(pc.invert(in_repeated)), _first_of_sorted(rows.filter(in_repeated))])


def _first_of_sorted(rows: pa.Table) -> pa.Table:
    ordered = rows.sort_by([(KEY, "ascending"), *_PRECEDENCE])
    keys = ordered[KEY].combine_chunks()
    changed = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    first = pa.concat_arrays([pa.array([True]), pc.fill_null(changed, True)])
    return ordered.filter(first)


def _beats(incoming: pa.Table, current: pa.Table) -> pa.Array:
    """Row-wise: does the incoming copy take precedence over the current one? (aligned tables)"""
    result = pa.array(np.zeros(incoming.num_rows, dtype=bool))
    undecided = pa.array(np.ones(incoming.num_rows, dtype=bool))
    for column, _ in _PRECEDENCE:
        new, old = incoming[column], current[column]
        greater = pc.fill_null(pc.greater(new, old), pc.and_(pc.is_valid(new), pc.is_null(old)))
        equal = pc.fill_null(pc.equal(new, old), pc.and_(pc.is_null(new), pc.is_null(old)))
        result = pc.or_(result, pc.and_(undecided, greater))
        undecided = pc.and_(undecided, equal)
    return result


def plan_merge(batch_rows: pa.Table, current: pa.Table) -> MergePlan:
    """Plan the curated commit for one batch.

    ``batch_rows``: the batch's published standardized rows. ``current``: the curated rows (at least
    key and precedence columns) for the keys the batch touches.

    The ordering and the join run on the key, the precedence columns and a row number only, and the
    plan names the winners by row number: a batch's payloads are most of its bytes, and sorting,
    joining and filtering them would copy the batch several times.
    """
    precedence = [name for name, _ in _PRECEDENCE]
    narrow = batch_rows.select([KEY, *precedence]).append_column(
        _ROW, pa.array(np.arange(batch_rows.num_rows, dtype=np.int64))
    )
    candidates = _first_per_key(narrow)
    skipped = batch_rows.num_rows - candidates.num_rows
    if current.num_rows == 0:
        return MergePlan(batch_rows, _indices(candidates[_ROW]), [], candidates.num_rows, 0, skipped)
    compare_payload = PAYLOAD in batch_rows.column_names and PAYLOAD in current.column_names
    compared = precedence + ([PAYLOAD] if compare_payload else [])
    existing = current.select([KEY, *compared]).rename_columns(
        [KEY] + [f"current_{name}" for name in compared]
    )
    joined = candidates.join(existing, keys=KEY, join_type="left outer")
    is_new = pc.is_null(joined[f"current_{precedence[0]}"])
    current_view = pa.table({name: joined[f"current_{name}"] for name in precedence})
    beats = _beats(joined.select(precedence), current_view)
    if compare_payload:
        # Same replay flag and payload as the current row: a re-send, not a new version. Only rows
        # whose key is in curated can be one, so only their payloads are fetched.
        matched = pc.invert(is_new)
        found = joined.filter(matched)
        payloads = batch_rows[PAYLOAD].take(found[_ROW])
        same = pc.and_(
            pc.fill_null(pc.equal(found["is_replay"], found["current_is_replay"]), False),
            pc.fill_null(pc.equal(payloads, found[f"current_{PAYLOAD}"]), False),
        )
        same_copy = pc.replace_with_mask(
            pa.array(np.zeros(joined.num_rows, dtype=bool)), matched.combine_chunks(), same.combine_chunks()
        )
        beats = pc.and_(beats, pc.invert(same_copy))
    wins = pc.or_(is_new, beats)
    winners = _indices(joined[_ROW].filter(wins))
    superseded_keys = joined[KEY].filter(pc.and_(wins, pc.invert(is_new)))
    inserted = pc.sum(pc.cast(is_new, pa.int64())).as_py() or 0
    superseded = len(superseded_keys)
    skipped += candidates.num_rows - inserted - superseded
    return MergePlan(batch_rows, winners, superseded_keys.to_pylist(), inserted, superseded, skipped)


@dataclass(frozen=True)
class DedupWindow:
    """Half-open event-time range ``[start, end)`` in which a batch looks for earlier copies."""

    start: datetime
    end: datetime

    def days(self) -> list[date]:
        return [self.start.date() + timedelta(days=n) for n in range((self.end - self.start).days)]


def days_window(days: list[date]) -> DedupWindow:
    """The whole UTC days from the earliest to the latest of ``days`` (``days`` not empty): what the
    daily totals and the compaction read of curated, one filter that prunes its day partitions."""
    return DedupWindow(_day_start(min(days), 0), _day_start(max(days), 1))


def dedup_window(batch_rows: pa.Table, window_days: int) -> DedupWindow | None:
    """The window of a batch: whole UTC days from its earliest to its latest event, widened by
    ``window_days`` each side. None for a batch without event times (nothing to look up)."""
    if batch_rows.num_rows == 0:
        return None
    bounds = pc.min_max(batch_rows[EVENT_TIME])
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return window_between(low and low.date(), high and high.date(), window_days)


def window_between(low: date | None, high: date | None, window_days: int) -> DedupWindow | None:
    """The window of a batch whose events fall on the days ``low`` .. ``high`` (None: no event times)."""
    if low is None or high is None:
        return None
    return DedupWindow(_day_start(low, -window_days), _day_start(high, window_days + 1))


def _day_start(day: date, shift: int) -> datetime:
    """Midnight UTC ``shift`` days from ``day``, saturated at the calendar's ends: a time the audit
    lets through must never crash the curated step (year 1 minus a week is no date)."""
    ordinal = min(max(day.toordinal() + shift, date.min.toordinal()), date.max.toordinal())
    return datetime.combine(date.fromordinal(ordinal), time(), UTC)


def event_days(rows: pa.Table) -> list[date]:
    """The distinct UTC days of ``rows``' event_timestamp, sorted."""
    if rows.num_rows == 0:
        return []
    days = pc.unique(pc.cast(rows[EVENT_TIME], pa.timestamp("us", tz="UTC")).cast(pa.date32()))
    return sorted(d for d in days.to_pylist() if d is not None)


TOTALS_SCHEMA = pa.schema(
    [
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("event_type", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("events", pa.int64(), nullable=False),
        pa.field("amount_minor", pa.int64(), nullable=False),
    ]
)


INT64_MAX = 2**63 - 1


class TotalsOverflowError(ArithmeticError):
    """A day's total does not fit the totals table's int64 column (declared, never a wrapped sum)."""

    def __init__(self, groups: list[dict]):
        self.groups = groups
        super().__init__(f"daily total beyond int64 for {len(groups)} group(s), e.g. {groups[:3]}")


_GROUP = ["event_date", "event_type", "currency"]
TOTALS_COLUMNS = (EVENT_TIME, "event_type", "currency", "amount_minor")
"""The curated columns the daily totals read."""
_EXACT = pa.decimal128(38, 0)
PARTIAL_TOTALS_SCHEMA = pa.schema(
    [
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("event_type", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("events", pa.int64(), nullable=False),
        pa.field("amount_minor", _EXACT, nullable=False),
    ]
)
"""Totals of some of the rows of a day: amounts as 38-digit decimals, not yet checked against int64 --
a part of a day may exceed int64 where the whole day does not (refunds), so only the combined totals
are checked (:func:`final_totals`)."""


def partial_totals(curated_rows: pa.Table) -> pa.Table:
    """Events and exact amount per (UTC day of event, event_type, currency) of one chunk of curated rows
    (:data:`PARTIAL_TOTALS_SCHEMA`): what is computed per chunk, then :func:`combine_totals`."""
    if curated_rows.num_rows == 0:
        return PARTIAL_TOTALS_SCHEMA.empty_table()
    dated = pa.table(
        {
            "event_date": pc.cast(curated_rows[EVENT_TIME], pa.timestamp("us", tz="UTC")).cast(pa.date32()),
            "event_type": pc.cast(curated_rows["event_type"], pa.string()),
            "currency": pc.cast(curated_rows["currency"], pa.string()),
            # Summed as decimals: an int64 sum would wrap silently.
            "amount_minor": pc.cast(pc.fill_null(curated_rows["amount_minor"], 0), _EXACT),
        }
    )
    grouped = dated.group_by(_GROUP).aggregate([("amount_minor", "count"), ("amount_minor", "sum")])
    return _as_partial(grouped, "amount_minor_count", "amount_minor_sum")


def combine_totals(partials: Iterable[pa.Table]) -> pa.Table:
    """Partial totals (:data:`PARTIAL_TOTALS_SCHEMA`) of disjoint sets of rows summed per group: the
    partial totals of their union. Exact (decimal sums), so chunks can be combined in any order."""
    parts = [part.cast(PARTIAL_TOTALS_SCHEMA) for part in partials if part.num_rows]
    if not parts:
        return PARTIAL_TOTALS_SCHEMA.empty_table()
    grouped = pa.concat_tables(parts).group_by(_GROUP).aggregate([("events", "sum"), ("amount_minor", "sum")])
    return _as_partial(grouped, "events_sum", "amount_minor_sum")


def _as_partial(grouped: pa.Table, events: str, amount: str) -> pa.Table:
    return pa.table(
        {
            **{name: grouped[name] for name in _GROUP},
            "events": grouped[events],
            "amount_minor": pc.cast(grouped[amount], _EXACT),
        }
    ).cast(PARTIAL_TOTALS_SCHEMA)


def final_totals(partial: pa.Table) -> pa.Table:
    """The daily totals (:data:`TOTALS_SCHEMA`, sorted) of combined partial totals; raises
    :class:`TotalsOverflowError` for a group whose amount does not fit int64 (never a wrapped sum)."""
    partial = partial.cast(PARTIAL_TOTALS_SCHEMA)
    amounts = partial["amount_minor"]
    beyond = partial.filter(
        pc.or_(
            pc.greater(amounts, pa.scalar(INT64_MAX, _EXACT)),
            pc.less(amounts, pa.scalar(-INT64_MAX - 1, _EXACT)),
        )
    )
    if beyond.num_rows:
        raise TotalsOverflowError(beyond.select(_GROUP).to_pylist())
    ordered = partial.sort_by([(name, "ascending") for name in _GROUP])
    return ordered.cast(TOTALS_SCHEMA)


def daily_totals(curated_rows: pa.Table) -> pa.Table:
    """Events and amount per (UTC day of event, event_type, currency), the business's daily view, of
    rows held whole; a scan too large for that streams :func:`partial_totals` into :func:`combine_totals`
    and ends with :func:`final_totals`, which gives the same table."""
    return final_totals(partial_totals(curated_rows))


KEY_COUNTS_SCHEMA = pa.schema([pa.field(KEY, pa.string()), pa.field("count", pa.int64(), nullable=False)])
"""How often each idempotency_key occurs in some rows: what the uniqueness check counts per chunk."""
DUPLICATES_SAMPLE = 10


@dataclass(frozen=True)
class DuplicateKeys:
    """What the curated uniqueness check found in a window."""

    rows: int
    """Rows checked."""
    keys: int
    """Distinct keys that occur more than once."""
    sample: dict[str, int]
    """The first few of them in key order (nulls last), with their counts: the same keys whoever
    counted, in whatever order the rows came."""


def key_counts(keys: pa.Array | pa.ChunkedArray) -> pa.Table:
    """:data:`KEY_COUNTS_SCHEMA` of one chunk of keys; chunks are then :func:`combine_key_counts`."""
    if len(keys) == 0:
        return KEY_COUNTS_SCHEMA.empty_table()
    counts = pc.value_counts(keys)
    columns = {KEY: counts.field("values").cast(pa.string()), "count": counts.field("counts")}
    return pa.table(columns).cast(KEY_COUNTS_SCHEMA)


def combine_key_counts(parts: Iterable[pa.Table]) -> pa.Table:
    """Key counts of disjoint sets of rows summed per key: the key counts of their union."""
    parts = [part.cast(KEY_COUNTS_SCHEMA) for part in parts if part.num_rows]
    if not parts:
        return KEY_COUNTS_SCHEMA.empty_table()
    if len(parts) == 1:
        return parts[0]
    grouped = pa.concat_tables(parts).group_by(KEY).aggregate([("count", "sum")])
    return pa.table({KEY: grouped[KEY], "count": grouped["count_sum"]}).cast(KEY_COUNTS_SCHEMA)


def duplicates_of(counts: pa.Table, sample_size: int = DUPLICATES_SAMPLE) -> DuplicateKeys:
    """The uniqueness check's finding from combined key counts."""
    repeated = counts.filter(pc.greater(counts["count"], 1))
    order = pc.sort_indices(repeated, sort_keys=[(KEY, "ascending", "at_end")])
    sample = repeated.take(order.slice(0, sample_size))
    return DuplicateKeys(
        rows=int(pc.sum(counts["count"]).as_py() or 0),
        keys=repeated.num_rows,
        sample=dict(zip(sample[KEY].to_pylist(), sample["count"].to_pylist(), strict=True)),
    )


def duplicate_keys(keys: pa.Array | pa.ChunkedArray, sample_size: int = DUPLICATES_SAMPLE) -> DuplicateKeys:
    """Keys that occur more than once among keys held whole; a scan too large for that streams
    :func:`key_counts` into :func:`combine_key_counts` and ends with :func:`duplicates_of`."""
    return duplicates_of(key_counts(keys), sample_size)
