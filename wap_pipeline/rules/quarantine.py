"""The quarantine filter: ``NOT (id IN quarantine AND is_replay == false)`` (FMEA 4.4).

``is_replay`` here is whether the row is a replay data-patcher issued (its grant verified, see
:mod:`wap_pipeline.rules.replays`), never what a producer claimed.

Every record has a *quarantine id*, so every record can be masked: its ``event_id`` when that is
usable as a key (a non-blank string of at most 128 characters without control characters), else
``message:<original SQS message id>`` -- a record with no event_id, a number for one, or a
100,000-character one is quarantined by the id the audit names, exactly as ``data-patcher
quarantine add`` takes it.
"""

from __future__ import annotations

from collections.abc import Collection

import pyarrow as pa
import pyarrow.compute as pc

RECORD_ID_COLUMN = "event_id"
MESSAGE_ID_PREFIX = "message:"
MAX_RECORD_ID_LENGTH = 128


def quarantine_ids(event_ids: pa.Array | pa.ChunkedArray, original_message_ids: pa.Array | pa.ChunkedArray):
    """Each record's quarantine id (see the module docstring), from its event id -- None where the
    payload had no string for one -- and its original SQS message id."""
    event_ids = pc.cast(event_ids, pa.string())
    usable = pc.fill_null(
        pc.and_(
            pc.and_(
                pc.not_equal(pc.utf8_trim_whitespace(event_ids), ""),
                pc.less_equal(pc.utf8_length(event_ids), MAX_RECORD_ID_LENGTH),
            ),
            pc.invert(pc.match_substring_regex(event_ids, r"[\x00-\x1f\x7f]")),
        ),
        False,
    )
    by_message = pc.binary_join_element_wise(
        MESSAGE_ID_PREFIX, pc.cast(original_message_ids, pa.string()), ""
    )
    return pc.if_else(usable, event_ids, by_message)


def quarantine_mask(
    rows: pa.Table, quarantined_ids: Collection[str], id_column: str = RECORD_ID_COLUMN
) -> pa.Array:
    """True for rows to skip: a quarantined id on a copy that is not a (verified) replay."""
    if not quarantined_ids or rows.num_rows == 0:
        return pa.array([False] * rows.num_rows, type=pa.bool_())
    value_set = pa.array(list(quarantined_ids), type=pa.string())
    ids = pc.cast(rows[id_column], pa.string())
    in_quarantine = pc.fill_null(pc.is_in(ids, value_set=value_set), False)
    return pc.and_(in_quarantine, pc.invert(rows["is_replay"]))
