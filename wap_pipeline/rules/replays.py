"""Which rows are replays: only those data-patcher issued (issue 17, item 4).

Any producer can set ``is_replay`` (a message attribute or a body field). Honouring that would let
any producer send past the quarantine and win curated's precedence over the original. So a replay
counts only when data-patcher granted it: before sending, the patcher writes a *grant* -- a random
token -> the quarantine id the replay will have and the SHA-256 of its body -- to a table only the
patcher role can write, and sends the token as the message attribute ``replay_token``; the forwarder
carries it into the landing record and raw.

A row is a *verified* replay when its token is granted for exactly that row's quarantine id and body.
Every other claim (``is_replay`` without a token, an unknown token, a token granted for another record
or another body) is not a replay: masked when its id is quarantined, no precedence in curated -- and
counted as an *unauthorized replay*. A grant is bound to one body and one id, so a token seen in raw
is worth nothing for anything else.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from wap_pipeline.rules.envelope import json_object
from wap_pipeline.rules.quarantine import quarantine_ids

REPLAY_TOKEN = "replay_token"
"""The SQS message attribute, landing record field and raw column that carry a grant's token."""


@dataclass(frozen=True)
class ReplayGrant:
    token: str
    quarantine_id: str
    """The quarantine id the replay's row will have (as the standardized step computes it)."""
    body_sha256: str
    """What the replay's body must hash to."""
    granted_by: str
    granted_at: str
    patch_id: str


def new_token() -> str:
    """128 random bits: not guessable, so only a grant's writer knows a token before it is sent."""
    return secrets.token_hex(16)


def body_sha256(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", errors="surrogatepass")).hexdigest()


def replay_quarantine_id(body: str, attributes: Mapping[str, str]) -> str | None:
    """The quarantine id the pipeline will give the replay of ``body`` sent with ``attributes``: its
    event_id when usable, else ``message:<original_message_id>``; None when neither is known before
    sending (no usable event_id and no original_message_id: the id would be SQS's new message id)."""
    event_id = (json_object(body) or {}).get("event_id")
    ids = quarantine_ids(
        pa.array([event_id if isinstance(event_id, str) else None], pa.string()),
        pa.array([attributes.get("original_message_id")], pa.string()),
    )
    return ids[0].as_py()


def verified_replays(
    tokens: pa.Array | pa.ChunkedArray,
    record_ids: pa.Array | pa.ChunkedArray,
    bodies: pa.Array | pa.ChunkedArray,
    grants: Mapping[str, ReplayGrant],
) -> pa.Array:
    """True for rows whose token is granted for that row's quarantine id and body."""
    verified = [False] * len(tokens)
    carrying = pc.indices_nonzero(pc.is_valid(tokens)).to_pylist()  # few rows: only replays have one
    for index in carrying:
        grant = grants.get(tokens[index].as_py())
        verified[index] = (
            grant is not None
            and grant.quarantine_id == record_ids[index].as_py()
            and grant.body_sha256 == body_sha256(bodies[index].as_py() or "")
        )
    return pa.array(verified, pa.bool_())


def replay_claims(*flags: pa.Array | pa.ChunkedArray) -> pa.Array:
    """True for rows that say they are replays by any of ``flags`` (nulls say nothing)."""
    claimed = pa.array([False] * len(flags[0]), pa.bool_())
    for flag in flags:
        claimed = pc.or_(claimed, pc.fill_null(flag, False))
    return claimed


def tokens_of(raw: pa.Table) -> pa.Array | pa.ChunkedArray:
    """The raw rows' replay tokens (all null for rows landed before tokens existed)."""
    if REPLAY_TOKEN in raw.column_names:
        return raw[REPLAY_TOKEN]
    return pa.nulls(raw.num_rows, pa.string())


def granted_tokens(raw: pa.Table) -> list[str]:
    """The distinct tokens of ``raw``: what to look up in the grant table for it."""
    return pc.unique(pc.drop_null(tokens_of(raw))).to_pylist()
