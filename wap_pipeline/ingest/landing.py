"""Turn landed Firehose files into batches (the ``landing_batches`` partitions).

A batch is a group of landing files recorded in a *manifest* (``<manifests_prefix><batch id>.json``
in the landing bucket), written before the partition is added. Manifests are the truth about which
file belongs to which batch, so a re-run of a batch reads exactly the same files, and a sensor that
crashed between writing manifests and committing its cursor picks the manifests up again instead of
grouping the files a second time.

Landed files are announced, not searched for: S3 sends an ``ObjectCreated`` notification for every
object under the landing prefix (Firehose's own deliveries included) to the landing-events queue,
and discovery batches what was announced. Firehose names an object after the arrival time of its
oldest record and retries a failed S3 delivery for up to a day, so a late file appears under an old
hour folder: a listing from "where we were" never finds it, a notification does. A notification is
deleted only once the file's manifest is written. The reconciliation (``wap-pipeline reconcile``, and
an asset check) is the safety net for a notification that was lost.

The cursor keeps the keys batched within a lookback window (by their LastModified), so that a
notification delivered twice does not batch a file twice.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from wap_pipeline.ingest import sqs as sqs_calls

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


def select_announced(
    objects: list[LandingObject], cursor: LandingCursor, claimed: set[str]
) -> list[LandingObject]:
    """Announced objects not yet in a batch, each once, oldest first. No time floor: a notification
    that waited in the queue is as good as a fresh one."""
    fresh = {o.key: o for o in objects if o.key not in claimed and o.key not in cursor.recent}
    return sorted(fresh.values(), key=lambda o: (o.last_modified, o.key))


def parse_notification(body: str, prefix: str) -> list[LandingObject]:
    """The objects an S3 event notification announces under ``prefix`` (keys URL-decoded, as S3 encodes
    them); nothing for S3's ``s3:TestEvent`` or other events."""
    document = json.loads(body)
    found = []
    for record in document.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        item = record["s3"]["object"]
        key = unquote_plus(item["key"])
        if key.startswith(prefix):
            when = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")).astimezone(UTC)
            found.append(LandingObject(key, int(item.get("size", 0)), when))
    return found


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


READ_AHEAD_BYTES = 8 * 2**20
"""Bytes of landing files fetched ahead of the caller: a bound in bytes, not only in files, so that a
batch of larger landing files (Firehose buffers up to 128 MB) does not hold more of them."""


def read_landed_files(
    s3, bucket: str, files: Sequence[LandingObject], ahead: int = 4, ahead_bytes: int = READ_AHEAD_BYTES
) -> Iterator[tuple[LandingObject, bytes]]:
    """Each landing file of a batch with its content, in manifest order, at most ``ahead`` GETs and
    about ``ahead_bytes`` (the manifest's sizes; always at least one file) in flight.

    A GET mostly waits on S3; fetching the next files while the caller parses the current one
    overlaps the two. What is held besides the caller's file is bounded, whatever the batch's size.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, ahead), thread_name_prefix="landing-get")

    def fetch(landed: LandingObject) -> tuple[LandingObject, Future[bytes]]:
        return landed, pool.submit(lambda: s3.get_object(Bucket=bucket, Key=landed.key)["Body"].read())

    remaining = deque(files)
    in_flight: deque[tuple[LandingObject, Future[bytes]]] = deque()

    def fill() -> None:
        held = sum(landed.size for landed, _ in in_flight)
        while remaining and (
            not in_flight or (len(in_flight) < max(1, ahead) and held + remaining[0].size <= ahead_bytes)
        ):
            held += remaining[0].size
            in_flight.append(fetch(remaining.popleft()))

    try:
        fill()
        while in_flight:
            landed, content = in_flight.popleft()
            data = content.result()
            fill()
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


def receive_announced(
    sqs, events_url: str, prefix: str, limit: int = 2000
) -> tuple[list[LandingObject], list[str]]:
    """The objects the landing-events queue announces (up to ``limit`` notifications), with the receipt
    handles to delete once they are batched."""
    objects: list[LandingObject] = []
    handles: list[str] = []
    while len(handles) < limit:
        messages = sqs_calls.receive(sqs, events_url)
        if not messages:
            break
        for message in messages:
            objects += parse_notification(message["Body"], prefix)
            handles.append(message["ReceiptHandle"])
    return objects, handles


def discover(
    s3,
    sqs,
    bucket: str,
    landing_prefix: str,
    manifests_prefix: str,
    events_url: str,
    cursor: LandingCursor,
    max_files: int,
    now: datetime | None = None,
) -> Discovery:
    """Batch the files announced since the last tick, write their manifests, then delete their
    notifications; pick up manifests a tick that died left behind."""
    now = now or datetime.now(UTC)
    recovered = manifests_after(s3, bucket, manifests_prefix, cursor.last_batch_id)
    claimed = {key for m in recovered for key in m.keys}
    announced, handles = receive_announced(sqs, events_url, landing_prefix)
    fresh = select_announced(announced, cursor, claimed)
    newest = max([cursor.last_batch_id] + [m.batch_id for m in recovered])
    created = group_into_batches(fresh, max_files, now, after=newest)
    for manifest in created:
        write_manifest(s3, bucket, manifests_prefix, manifest)
    sqs_calls.delete(sqs, events_url, handles)  # only now: a crash before this re-announces the files
    manifests = recovered + created
    return Discovery(manifests, advance_cursor(cursor, announced, manifests))
