"""Turn landed Firehose files into batches (the ``landing_batches`` partitions).

A batch is a group of landing files recorded in a *manifest* (``<manifests_prefix><batch id>.json``
in the landing bucket), written before the partition is added. Manifests are the truth about which
file belongs to which batch, so a re-run of a batch reads exactly the same files, and a sensor that
crashed between writing manifests and committing its cursor picks the manifests up again instead of
grouping the files a second time.

The cursor is an optimisation over that truth: a watermark (newest LastModified seen) and the keys
seen within a lookback window before it, so that objects listed late, or within the same second,
are neither missed nor taken twice.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice

from botocore.exceptions import ClientError

LOOKBACK = timedelta(minutes=15)


@dataclass(frozen=True)
class LandingObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class Manifest:
    batch_id: str
    files: tuple[LandingObject, ...]

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.files]

    @property
    def bookmark(self) -> str:
        """The ingest position this batch reaches: its newest landing key."""
        return max(self.keys)

    @property
    def landed_at(self) -> datetime:
        """The batch's reference time: when its newest file landed (S3's LastModified, recorded in
        the manifest when the batch was formed). Time-relative audit rules compare with this, not
        with the clock, so every run of the batch gets the same verdict."""
        return max(f.last_modified for f in self.files)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "batch_id": self.batch_id,
                "files": [
                    {"key": f.key, "size": f.size, "last_modified": f.last_modified.isoformat()}
                    for f in self.files
                ],
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        doc = json.loads(data)
        files = tuple(
            LandingObject(f["key"], int(f["size"]), datetime.fromisoformat(f["last_modified"]))
            for f in doc["files"]
        )
        return cls(doc["batch_id"], files)


@dataclass
class LandingCursor:
    watermark: datetime | None = None
    recent: set[str] = field(default_factory=set)
    last_batch_id: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "recent": sorted(self.recent),
                "last_batch_id": self.last_batch_id,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        doc = json.loads(text)
        watermark = datetime.fromisoformat(doc["watermark"]) if doc.get("watermark") else None
        return cls(watermark, set(doc.get("recent", [])), doc.get("last_batch_id", ""))


def listing_start_after(prefix: str, cursor: LandingCursor) -> str | None:
    """Firehose keys start with ``YYYY/MM/DD/HH/``: skip hour folders well before the window."""
    if cursor.watermark is None:
        return None
    earliest = cursor.watermark - LOOKBACK - timedelta(hours=1)
    return f"{prefix}{earliest:%Y/%m/%d/%H/}"


def select_new(objects: list[LandingObject], cursor: LandingCursor, claimed: set[str]) -> list[LandingObject]:
    """Objects not yet assigned to a batch, oldest first."""
    floor = cursor.watermark - LOOKBACK if cursor.watermark is not None else None
    fresh = [
        o
        for o in objects
        if o.key not in claimed and o.key not in cursor.recent and (floor is None or o.last_modified >= floor)
    ]
    return sorted(fresh, key=lambda o: (o.last_modified, o.key))


def make_batch_id(created: datetime, sequence: int) -> str:
    created = created.astimezone(UTC)
    return f"{created:%Y%m%dT%H%M%S}{created.microsecond // 1000:03d}Z-{sequence:03d}"


def _batch_time(batch_id: str) -> datetime | None:
    try:
        return datetime.strptime(batch_id[:18], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def group_into_batches(
    objects: list[LandingObject], max_files: int, created: datetime, after: str = ""
) -> list[Manifest]:
    """Manifests of at most ``max_files`` objects each, with ids after ``after`` (the newest existing
    batch id): a table's ledger assumes every batch id up to its watermark is known, so a new batch
    never sorts before an existing one, even when this clock is behind the one that made it."""
    previous = _batch_time(after) if after else None
    if previous is not None and make_batch_id(created, 0) <= after:
        created = previous + timedelta(milliseconds=1)
    return [
        Manifest(make_batch_id(created, number), tuple(objects[start : start + max_files]))
        for number, start in enumerate(range(0, len(objects), max_files))
    ]


def advance_cursor(
    cursor: LandingCursor, seen: list[LandingObject], manifests: list[Manifest]
) -> LandingCursor:
    everything = list(seen) + [f for m in manifests for f in m.files]
    if not everything and cursor.watermark is None:
        return cursor
    watermark = max([o.last_modified for o in everything] + ([cursor.watermark] if cursor.watermark else []))
    floor = watermark - LOOKBACK
    recent = {o.key for o in everything if o.last_modified >= floor} | {
        key for key in cursor.recent if key in {o.key for o in everything}
    }
    last_batch = max([cursor.last_batch_id] + [m.batch_id for m in manifests])
    return LandingCursor(watermark, recent, last_batch)


# --- S3 side ---------------------------------------------------------------------------------------


def list_objects(s3, bucket: str, prefix: str, start_after: str | None = None) -> list[LandingObject]:
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        kwargs["StartAfter"] = start_after
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        for item in page.get("Contents", []):
            objects.append(LandingObject(item["Key"], item["Size"], item["LastModified"].astimezone(UTC)))
    return objects


def manifest_key(manifests_prefix: str, batch_id: str) -> str:
    return f"{manifests_prefix}{batch_id}.json"


def read_manifest(s3, bucket: str, manifests_prefix: str, batch_id: str) -> Manifest:
    body = s3.get_object(Bucket=bucket, Key=manifest_key(manifests_prefix, batch_id))["Body"].read()
    return Manifest.from_json(body)


def read_landed_files(
    s3, bucket: str, files: Sequence[LandingObject], ahead: int = 4
) -> Iterator[tuple[LandingObject, bytes]]:
    """Each landing file of a batch with its content, in manifest order, ``ahead`` GETs in flight.

    A GET mostly waits on S3; fetching the next files while the caller parses the current one
    overlaps the two. At most ``ahead`` files are held besides the caller's, whatever the batch's size.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, ahead), thread_name_prefix="landing-get")

    def fetch(landed: LandingObject) -> tuple[LandingObject, Future[bytes]]:
        return landed, pool.submit(lambda: s3.get_object(Bucket=bucket, Key=landed.key)["Body"].read())

    remaining = iter(files)
    in_flight = deque(fetch(landed) for landed in islice(remaining, max(1, ahead)))
    try:
        while in_flight:
            landed, content = in_flight.popleft()
            data = content.result()
            following = next(remaining, None)
            if following is not None:
                in_flight.append(fetch(following))
            yield landed, data
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class ManifestConflictError(RuntimeError):
    """A manifest of this batch id already exists with other files: two batches would share an id."""


def write_manifest(s3, bucket: str, manifests_prefix: str, manifest: Manifest) -> None:
    """Write once: a manifest is never replaced. A 412 is fine only when the manifest already there
    names the same files (a retried write); one with other files is a conflict, never ignored."""
    try:
        s3.put_object(
            Bucket=bucket,
            Key=manifest_key(manifests_prefix, manifest.batch_id),
            Body=manifest.to_json(),
            IfNoneMatch="*",
            ContentType="application/json",
        )
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("PreconditionFailed", "412"):
            raise
        existing = read_manifest(s3, bucket, manifests_prefix, manifest.batch_id)
        if existing.keys != manifest.keys:
            raise ManifestConflictError(
                f"manifest {manifest.batch_id} already exists with {len(existing.keys)} other file(s) "
                f"(e.g. {sorted(set(existing.keys) ^ set(manifest.keys))[:3]}); not overwritten"
            ) from error


def batch_ids_after(s3, bucket: str, manifests_prefix: str, last_batch_id: str) -> list[str]:
    """The ids of every batch after ``last_batch_id`` (all with ""), oldest first: one listing of the
    manifests, none read. Batch ids sort as their manifest keys do."""
    start_after = manifest_key(manifests_prefix, last_batch_id) if last_batch_id else None
    return [
        o.key[len(manifests_prefix) : -len(".json")]
        for o in list_objects(s3, bucket, manifests_prefix, start_after)
        if o.key.endswith(".json")
    ]


def manifests_after(s3, bucket: str, manifests_prefix: str, last_batch_id: str) -> list[Manifest]:
    return [
        read_manifest(s3, bucket, manifests_prefix, batch_id)
        for batch_id in batch_ids_after(s3, bucket, manifests_prefix, last_batch_id)
    ]


@dataclass(frozen=True)
class Discovery:
    manifests: list[Manifest]
    """Every manifest not yet registered as a partition: recovered ones and new ones."""
    cursor: LandingCursor


def discover(
    s3,
    bucket: str,
    landing_prefix: str,
    manifests_prefix: str,
    cursor: LandingCursor,
    max_files: int,
    now: datetime | None = None,
) -> Discovery:
    """Find landed files not yet in a batch, write their manifests, and advance the cursor."""
    now = now or datetime.now(UTC)
    recovered = manifests_after(s3, bucket, manifests_prefix, cursor.last_batch_id)
    claimed = {key for m in recovered for key in m.keys}
    listed = list_objects(s3, bucket, landing_prefix, listing_start_after(landing_prefix, cursor))
    fresh = select_new(listed, cursor, claimed)
    newest = max([cursor.last_batch_id] + [m.batch_id for m in recovered])
    created = group_into_batches(fresh, max_files, now, after=newest)
    for manifest in created:
        write_manifest(s3, bucket, manifests_prefix, manifest)
    manifests = recovered + created
    return Discovery(manifests, advance_cursor(cursor, listed, manifests))
