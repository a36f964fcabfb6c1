"""The safety net of event-driven discovery: landed objects that no manifest names.

Discovery batches the files S3 announced. A lost notification would leave a file in the landing
prefix that no batch ever reads; the reconciliation lists the landing prefix (on AWS, an S3 Inventory
report does the same at scale), and flags every object that landed within the window, is older than
the grace period, and is in no manifest. ``adopt`` batches them: it writes their manifests, which the
landing sensor then picks up like the manifests of a tick that died.
"""

from __future__ import annotations

from datetime import datetime, timedelta

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
