"""Row filters shared by the engines, the curated checks and the daily totals."""

from __future__ import annotations

from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan

from wap_pipeline.rules.curated import EVENT_TIME, DedupWindow


def window_filter(window: DedupWindow) -> BooleanExpression:
    """Rows whose event_timestamp is in ``[start, end)``: prunes curated's day partitions."""
    return And(
        GreaterThanOrEqual(EVENT_TIME, window.start.isoformat()),
        LessThan(EVENT_TIME, window.end.isoformat()),
    )
