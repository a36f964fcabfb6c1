"""Message reconciliation from the pipeline's own records, per message id, without a sender's ledger.

Two identities over a window, checked per SQS message id:

* **forwarded = landed.** Every message the forwarder's receipts say Firehose accepted is in a raw
  batch (else Firehose lost it, or it waits in Firehose's error output or in a file no batch read), and
  every landed row was forwarded (else something wrote to the stream or the landing prefix behind
  the forwarder's back).
* **landed = published + masked.** Every landed row of a batch published to standardized is either
  there or was masked because its quarantine id is quarantined (else a row vanished in between).

Batches not published yet (in flight, or failed their audit) are counted as ``pending``: their rows
are somewhere the operator can see, not lost. The caller chooses the window and gives the sets; this
module only compares them (the I/O lives in :mod:`wap_pipeline.status`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

SAMPLE = 20


@dataclass(frozen=True)
class MessageAccount:
    forwarded: int
    """Distinct message ids forwarded in the window (past the grace period)."""
    landed: int
    """Distinct message ids in raw batches of the window."""
    published: int
    masked: int
    pending: int
    """Landed in batches not published to standardized yet (in flight, or a failed audit)."""
    rejected: tuple[str, ...] = ()
    """Rejected for their content and never forwarded since (a fixed copy names them as its original):
    in the DLQ, or purged from it."""
    not_landed: tuple[str, ...] = ()
    not_forwarded: tuple[str, ...] = ()
    unaccounted: tuple[str, ...] = ()
    """Landed in a published batch, neither in standardized nor masked by a quarantined id."""

    @property
    def holds(self) -> bool:
        return not (self.not_landed or self.not_forwarded or self.unaccounted)

    def as_dict(self) -> dict:
        return {
            "forwarded": self.forwarded,
            "landed": self.landed,
            "published": self.published,
            "masked": self.masked,
            "pending": self.pending,
            "rejected": len(self.rejected),
            "not_landed": len(self.not_landed),
            "not_forwarded": len(self.not_forwarded),
            "unaccounted": len(self.unaccounted),
            "sample_not_landed": list(self.not_landed[:SAMPLE]),
            "sample_not_forwarded": list(self.not_forwarded[:SAMPLE]),
            "sample_unaccounted": list(self.unaccounted[:SAMPLE]),
            "sample_rejected": list(self.rejected[:SAMPLE]),
            "holds": self.holds,
        }


def unpublished_rows(
    landed: Mapping[str, Collection[str]], is_published, published_ids: Collection[str]
) -> set[str]:
    """Message ids landed in a published batch that are not in standardized: the rows the quarantine
    must explain. ``landed``: batch id -> its landed message ids."""
    published = set(published_ids)
    return {m for batch, ids in landed.items() if is_published(batch) for m in ids if m not in published}


def reconcile_messages(
    must_land: Collection[str],
    forwarded_known: Mapping[str, str],
    landed: Mapping[str, Collection[str]],
    is_published,
    published_ids: Collection[str],
    masked_by: Mapping[str, str],
    quarantined: Collection[str],
    rejected: Collection[str] = (),
) -> MessageAccount:
    """Hold the landed rows against the receipts and standardized.

    ``must_land``: ids forwarded in the window, old enough to have landed. ``forwarded_known``: every id
    forwarded early enough to land in the window's batches (a wider look back: Firehose retries a
    delivery for up to a day), with its original message id. ``rejected``: ids the forwarder rejected. ``landed``: batch id -> message ids, for the window's batches.
    ``is_published(batch_id)``: the batch is on standardized's main. ``published_ids``: message ids in
    standardized for those batches. ``masked_by``: the quarantine id of each row
    :func:`unpublished_rows` named. ``quarantined``: the quarantine's ids.
    """
    landed_ids = {m for ids in landed.values() for m in ids}
    published_batches = [b for b in landed if is_published(b)]
    in_published = {m for b in published_batches for m in landed[b]}
    pending = {m for b in landed if not is_published(b) for m in landed[b]} - in_published
    published = set(published_ids) & in_published
    missing = unpublished_rows(landed, is_published, published)
    quarantine = set(quarantined)
    masked = {m for m in missing if masked_by.get(m) in quarantine}
    known = set(forwarded_known)
    fixed = set(forwarded_known.values())
    return MessageAccount(
        forwarded=len(set(must_land)),
        landed=len(landed_ids),
        published=len(published),
        masked=len(masked),
        pending=len(pending),
        rejected=tuple(sorted(set(rejected) - known - fixed)),
        not_landed=tuple(sorted(set(must_land) - landed_ids)),
        not_forwarded=tuple(sorted(landed_ids - known)),
        unaccounted=tuple(sorted(missing - masked)),
    )
