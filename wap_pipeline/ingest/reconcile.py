"""Reconciliations: landed objects that no manifest names, and messages held against the receipts.

**Files.** The safety net of event-driven discovery: landed objects that no manifest names.

Discovery batches the files S3 announced. A lost notification would leave a file in the landing
prefix that no batch ever reads; the reconciliation lists the landing prefix (on AWS, an S3 Inventory
report does the same at scale), and flags every object that landed within the window, is older than
the grace period, and is in no manifest. ``adopt`` batches them: it writes their manifests, which the
landing sensor then picks up like the manifests of a tick that died.

**Messages.** :func:`messages` gathers, for a window, what the forwarder's receipts say it forwarded,
what landed in raw, and what standardized published, and checks the identities of
:mod:`wap_pipeline.rules.accounting` per message id -- the ground truth without a sender's ledger.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, In
from pyiceberg.table import Table

from wap_pipeline.iceberg import wap
from wap_pipeline.ingest.landing import (
    LandingObject,
    Manifest,
    batch_ids_after,
    group_into_batches,
    list_objects,
    make_batch_id,
    manifests_after,
    write_manifest,
)
from wap_pipeline.ingest.receipts import receipt_log
from wap_pipeline.rules.accounting import MessageAccount, reconcile_messages, unpublished_rows
from wap_pipeline.rules.standardize import record_quarantine_ids
from wap_pipeline.settings import Settings


def unannounced(s3, settings: Settings, now: datetime) -> list[LandingObject]:
    """Objects landed in the window, older than the grace period, named by no manifest, oldest first.

    Only manifests made since the window began are read: a manifest is always made after its files
    landed, so an older one names no file of the window.
    """
    since = now - timedelta(hours=settings.reconcile_window_hours)
    until = now - timedelta(minutes=settings.reconcile_after_minutes)
    landed = [
        o
        for o in list_objects(s3, settings.landing_bucket, settings.landing_prefix)
        if since <= o.last_modified <= until
    ]
    if not landed:
        return []
    recent = manifests_after(s3, settings.landing_bucket, settings.manifests_prefix, make_batch_id(since, 0))
    named = {key for manifest in recent for key in manifest.keys}
    return sorted((o for o in landed if o.key not in named), key=lambda o: (o.last_modified, o.key))


def adopt(s3, settings: Settings, objects: list[LandingObject], now: datetime) -> list[Manifest]:
    """Batch ``objects``: write their manifests, with ids after every existing one."""
    existing = batch_ids_after(s3, settings.landing_bucket, settings.manifests_prefix, "")
    manifests = group_into_batches(
        objects, settings.batch_max_files, now, after=existing[-1] if existing else ""
    )
    for manifest in manifests:
        write_manifest(s3, settings.landing_bucket, settings.manifests_prefix, manifest)
    return manifests


# Firehose retries a failed S3 delivery for up to 24 hours: a row of a batch made at t may have been
# forwarded this long before t.
FORWARD_TO_BATCH_LAG = timedelta(hours=25)


def messages(
    s3,
    raw: Table,
    standardized: Table,
    quarantined: Collection[str],
    settings: Settings,
    now: datetime,
    since: datetime | None,
    grace: timedelta | None = None,
) -> MessageAccount:
    """The message reconciliation (:mod:`wap_pipeline.rules.accounting`) over the batches made since
    ``since`` (None: every batch) and the receipts of the messages forwarded since then.

    A message forwarded within ``grace`` (default ``WAP_RECONCILE_AFTER_MINUTES``) may still be in
    Firehose's buffer or wait for its batch: it is not required to have landed yet.

    With ``since``, receipts older than the oldest one kept do not exist (a deployment from before
    receipts, or a lifecycle rule): the window starts no earlier than the oldest receipt. Without,
    every batch is held against every receipt.
    """
    receipts = receipt_log(s3, settings).read(None if since is None else since - FORWARD_TO_BATCH_LAG)
    if since is None:
        start, in_window = datetime.min.replace(tzinfo=UTC), AlwaysTrue()
    elif receipts:
        start = max(since, receipts[0].forwarded_at)
        in_window = GreaterThanOrEqual("batch_id", make_batch_id(start, 0))
    else:  # nothing forwarded since receipts exist: no window yet
        return reconcile_messages((), {}, {}, lambda _: False, (), {}, quarantined)
    until = now - (timedelta(minutes=settings.reconcile_after_minutes) if grace is None else grace)
    known: dict[str, str] = {}
    must_land: set[str] = set()
    rejected: set[str] = set()
    for receipt in receipts:
        known.update(receipt.forwarded)
        rejected.update(r.message_id for r in receipt.rejected)
        if start <= receipt.forwarded_at <= until:
            must_land.update(receipt.forwarded)
    landed: dict[str, set[str]] = {}
    rows = raw.scan(row_filter=in_window, selected_fields=("batch_id", "message_id")).to_arrow()
    for batch_id, message_id in zip(
        rows["batch_id"].to_pylist(), rows["message_id"].to_pylist(), strict=True
    ):
        landed.setdefault(batch_id, set()).add(message_id)
    held = wap.ledger(standardized)
    published = standardized.scan(row_filter=in_window, selected_fields=("message_id",)).to_arrow()
    published_ids = set(published["message_id"].to_pylist())
    missing = unpublished_rows(landed, held.__contains__, published_ids)
    masked_by: dict[str, str] = {}
    if missing:
        rows = raw.scan(
            row_filter=And(in_window, In("message_id", sorted(missing))),
            selected_fields=("message_id", "original_message_id", "body"),
        ).to_arrow()
        masked_by = dict(
            zip(rows["message_id"].to_pylist(), record_quarantine_ids(rows).to_pylist(), strict=True)
        )
    return reconcile_messages(
        must_land, known, landed, held.__contains__, published_ids, masked_by, quarantined, rejected
    )
