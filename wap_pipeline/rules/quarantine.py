"""The quarantine filter: ``NOT (id IN quarantine AND is_replay == false)`` (FMEA 4.4)."""

from __future__ import annotations

from collections.abc import Collection

import pyarrow as pa
import pyarrow.compute as pc

RECORD_ID_COLUMN = "event_id"


def quarantine_mask(
    rows: pa.Table, quarantined_ids: Collection[str], id_column: str = RECORD_ID_COLUMN
) -> pa.Array:
    """True for rows to skip: a quarantined id on a copy that is not a replay."""
    if not quarantined_ids or rows.num_rows == 0:
        return pa.array([False] * rows.num_rows, type=pa.bool_())
    value_set = pa.array(list(quarantined_ids), type=pa.string())
    ids = pc.cast(rows[id_column], pa.string())
    in_quarantine = pc.fill_null(pc.is_in(ids, value_set=value_set), False)
    return pc.and_(in_quarantine, pc.invert(rows["is_replay"]))
