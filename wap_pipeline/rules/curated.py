"""Curated merge planning: one row per idempotency_key.

Precedence between two copies of a key: a replay beats an original; then the later
event_timestamp; then the later sent_timestamp. A copy that does not beat the current row is a
duplicate and is skipped. Every standardized row of a batch is counted exactly once as inserted,
superseded (it replaced a curated row) or skipped -- the accounting identity the curated check uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

KEY = "idempotency_key"
_PRECEDENCE = (
    ("is_replay", "descending"),
    ("event_timestamp", "descending"),
    ("sent_timestamp", "descending"),
)


@dataclass(frozen=True)
class MergePlan:
    winners: pa.Table
    """Rows to write: new keys and keys whose curated row they supersede."""
    superseded_keys: list[str]
    """Keys whose current curated row is replaced (delete, then insert the winner)."""
    inserted: int
    superseded: int
    skipped: int

    @property
    def accounted(self) -> int:
        return self.inserted + self.superseded + self.skipped


def _first_per_key(rows: pa.Table) -> pa.Table:
    """The highest-precedence row of each key."""
    if rows.num_rows == 0:
        return rows
    ordered = rows.sort_by([(KEY, "ascending"), *_PRECEDENCE])
    keys = ordered[KEY].combine_chunks()
    changed = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    first = pa.concat_arrays([pa.array([True]), pc.fill_null(changed, True)])
    return ordered.filter(first)


def _beats(incoming: pa.Table, current: pa.Table) -> pa.Array:
    """Row-wise: does the incoming copy take precedence over the current one? (aligned tables)"""
    result = pa.array([False] * incoming.num_rows)
    undecided = pa.array([True] * incoming.num_rows)
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
    """
    candidates = _first_per_key(batch_rows)
    skipped = batch_rows.num_rows - candidates.num_rows
    if current.num_rows == 0:
        return MergePlan(candidates, [], candidates.num_rows, 0, skipped)
    precedence_columns = [KEY] + [name for name, _ in _PRECEDENCE]
    existing = current.select(precedence_columns).rename_columns(
        [KEY] + [f"current_{name}" for name, _ in _PRECEDENCE]
    )
    joined = candidates.join(existing, keys=KEY, join_type="left outer")
    is_new = pc.is_null(joined[f"current_{_PRECEDENCE[0][0]}"])
    current_view = pa.table({name: joined[f"current_{name}"] for name, _ in _PRECEDENCE})
    wins = pc.or_(is_new, _beats(joined.select([name for name, _ in _PRECEDENCE]), current_view))
    winners = joined.filter(wins).select(candidates.column_names)
    superseding = joined.filter(pc.and_(wins, pc.invert(is_new)))
    inserted = pc.sum(pc.cast(is_new, pa.int64())).as_py() or 0
    superseded = superseding.num_rows
    skipped += candidates.num_rows - inserted - superseded
    return MergePlan(winners, superseding[KEY].to_pylist(), inserted, superseded, skipped)
