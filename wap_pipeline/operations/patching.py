"""The I/O around :mod:`wap_pipeline.rules.cleaning` for ``data-patcher inspect`` and ``secure-clean``.

* a landing file is read as a stream (S3 ``GetObject`` body in 1 MiB chunks, or a local file), never
  whole, so gigabyte files stay in bounded memory;
* every bucket and queue is checked against the allow-lists of :class:`~wap_pipeline.settings.Settings`
  before it is touched;
* the cleaned copy is spooled to a temporary file and uploaded under the patches prefix of the landing
  bucket; the source file, like all raw data, is never modified;
* replays are sent only after the copy is stored, then the original records are quarantined (a replay
  bypasses the quarantine; the original copy is masked when its batch is re-driven). Sending first
  means a failure in between leaves a batch that fails again -- never a record masked with no
  replay on its way.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from botocore.exceptions import ClientError

from wap_pipeline import aws
from wap_pipeline.rules.cleaning import (
    CLEANED,
    INVALID,
    READ_CHUNK_BYTES,
    CleanedLine,
    CleanSummary,
    RecordIds,
    clean_lines,
    iter_lines,
)
from wap_pipeline.settings import Settings
from wap_pipeline.state import record_sent

INJECT_GROUP = 100
"""Replays sent (and recorded in one audit-log entry) together."""


class NotAllowedError(Exception):
    """A bucket or queue that is not on data-patcher's allow-list."""


class NotFoundError(Exception):
    """The file to inspect or clean, or the queue to re-inject to, does not exist."""


class KeyChangeRefused(Exception):
    """Cleaning would change records' idempotency_key or event_id, and that was not allowed: their
    replays would be new events to curated, beside whatever the old keys already hold."""

    def __init__(self, records: list[CleanedLine]):
        self.records = records
        super().__init__(f"cleaning changes the idempotency_key or event_id of {len(records)} record(s)")


@dataclass(frozen=True)
class Source:
    uri: str
    bucket: str | None = None
    key: str | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        """Where the cleaned copy goes under the patch prefix: the source key, or local/<file name>."""
        return self.key if self.key else f"local/{self.path.name if self.path else 'file'}"


def parse_source(uri: str) -> Source:
    """``s3://bucket/key`` or a local path."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ValueError(f"{uri!r} is not s3://bucket/key")
        return Source(uri, bucket=bucket, key=key)
    return Source(uri, path=Path(uri))


def check_bucket(settings: Settings, bucket: str) -> None:
    if bucket not in settings.allowed_buckets:
        raise NotAllowedError(
            f"bucket {bucket!r} is not allow-listed for data-patcher (allowed: "
            f"{', '.join(sorted(settings.allowed_buckets))}; set WAP_PATCHER_ALLOWED_BUCKETS to change)"
        )


def check_queue(settings: Settings, queue: str) -> None:
    if queue not in settings.allowed_queues:
        raise NotAllowedError(
            f"queue {queue!r} is not allow-listed for data-patcher (allowed: "
            f"{', '.join(sorted(settings.allowed_queues))}; set WAP_PATCHER_ALLOWED_QUEUES to change)"
        )


@dataclass(frozen=True)
class OpenedFile:
    chunks: Iterator[bytes]
    """The file's bytes, a chunk at a time (never read whole)."""
    landed_at: datetime
    """When the file landed (S3's LastModified; a local copy's modification time): the time reference
    the pipeline's audit used for the batch it belongs to, so ``inspect`` gives the same verdict."""


@contextlib.contextmanager
def open_chunks(settings: Settings, source: Source) -> Iterator[OpenedFile]:
    """The file as a stream of byte chunks. Raises NotAllowedError / NotFoundError before reading."""
    if source.path is not None:
        if not source.path.is_file():
            raise NotFoundError(f"no such file: {source.path}")
        landed_at = datetime.fromtimestamp(source.path.stat().st_mtime, tz=UTC)
        with source.path.open("rb") as handle:
            yield OpenedFile(iter(lambda: handle.read(READ_CHUNK_BYTES), b""), landed_at)
        return
    assert source.bucket is not None and source.key is not None
    check_bucket(settings, source.bucket)
    try:
        response = aws.client("s3", settings).get_object(Bucket=source.bucket, Key=source.key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "NoSuchBucket", "404"):
            raise NotFoundError(f"no such object: {source.uri}") from error
        raise
    body = response["Body"]
    try:
        yield OpenedFile(body.iter_chunks(READ_CHUNK_BYTES), response["LastModified"].astimezone(UTC))
    finally:
        body.close()


def standardized_fields(settings: Settings) -> tuple[dict[str, object], str]:
    """The fields the standardized table accepts -- from the live table when the catalog has it (an
    evolved schema counts), else the built-in schema -- and which of the two was used."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import STANDARDIZED_SCHEMA, STANDARDIZED_TABLE, payload_fields

    try:
        table = load_wap_catalog(settings).load_table(STANDARDIZED_TABLE)
    except (NoSuchTableError, NoSuchNamespaceError):
        return payload_fields(STANDARDIZED_SCHEMA), "built-in schema"
    except Exception as error:  # no catalog access (e.g. the patcher role): the built-in rules still apply
        return payload_fields(
            STANDARDIZED_SCHEMA
        ), f"built-in schema (live table unreadable: {type(error).__name__})"
    return payload_fields(table.schema()), "live standardized table"


def new_patch_id(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class PatchOutcome:
    patch_id: str
    summary: CleanSummary
    copy_uri: str | None = None
    injected: int = 0
    quarantined: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "patch_id": self.patch_id,
            "cleaned_copy": self.copy_uri,
            "injected": self.injected,
            "quarantined": self.quarantined,
            "warnings": self.warnings,
            "summary": self.summary.as_dict(),
        }


def secure_clean(
    operator,
    source: Source,
    chars: frozenset[str],
    queue: str | None,
    reason: str,
    dry_run: bool,
    on_record: Callable[[CleanedLine, str | None], None],
    allow_key_change: bool = False,
) -> PatchOutcome:
    """Clean ``source``; store the cleaned copy; re-inject the cleaned records to ``queue`` as replays;
    quarantine their originals. ``on_record(record, new_message_id)`` is told about every record that
    is not unchanged (an injected one once it is sent). Dry run: read and validate, change nothing.

    Raises :class:`KeyChangeRefused`, having written and sent nothing, when cleaning changes a record's
    ``idempotency_key`` or ``event_id`` and ``allow_key_change`` is not set.

    ``operator`` is a :class:`wap_pipeline.operations.actions.Operator`: every change is recorded."""
    settings: Settings = operator.settings
    if queue is not None:
        check_queue(settings, queue)
        if not dry_run:
            _ensure_queue_exists(settings, queue)
    check_bucket(settings, settings.landing_bucket)
    fields, _ = standardized_fields(settings)
    outcome = PatchOutcome(new_patch_id(), CleanSummary())
    key_changes: list[CleanedLine] = []
    with tempfile.TemporaryDirectory(prefix="wap-patch-") as scratch:
        copy_path, spool_path = Path(scratch) / "cleaned", Path(scratch) / "replays.ndjson"
        with (
            open_chunks(settings, source) as opened,
            copy_path.open("wb") as copy,
            spool_path.open("wb") as spool,
        ):
            for cleaned in clean_lines(
                iter_lines(opened.chunks), chars, fields, outcome.summary, settings.payload_limits
            ):
                if cleaned.output is not None:
                    copy.write(cleaned.output + b"\n")
                if cleaned.status == INVALID or (cleaned.status == CLEANED and (dry_run or queue is None)):
                    on_record(cleaned, None)
                if cleaned.status == CLEANED:
                    spool.write(orjson.dumps(cleaned.as_dict()) + b"\n")
                    if cleaned.key_changes:
                        key_changes.append(cleaned)
        if key_changes and not allow_key_change:
            raise KeyChangeRefused(key_changes)
        if dry_run:
            return outcome
        copy_key = f"{settings.patches_prefix}{outcome.patch_id}/{source.name}"
        aws.client("s3", settings).upload_file(str(copy_path), settings.landing_bucket, copy_key)
        outcome.copy_uri = f"s3://{settings.landing_bucket}/{copy_key}"
        operator.record_patch(
            outcome.copy_uri,
            reason,
            {
                "patch_id": outcome.patch_id,
                "source": source.uri,
                "removed_characters": sorted(f"U+{ord(c):04X}" for c in chars),
                "summary": outcome.summary.as_dict(),
            },
        )
        if queue is None or not outcome.summary.by_status[CLEANED]:
            return outcome
        replays: list[CleanedLine] = []
        with spool_path.open("rb") as spool:
            for line in spool:
                replays.append(_from_dict(orjson.loads(line)))
                if len(replays) == INJECT_GROUP:
                    _inject(operator, queue, replays, reason, outcome, on_record)
                    replays = []
        if replays:
            _inject(operator, queue, replays, reason, outcome, on_record)
        _quarantine_originals(operator, spool_path, reason, outcome)
    record_sent(settings, outcome.injected, kind="replay")
    return outcome


def _ensure_queue_exists(settings: Settings, queue: str) -> None:
    from wap_pipeline.provision import queue_url

    try:
        queue_url(aws.client("sqs", settings), queue)
    except ClientError as error:
        if error.response["Error"]["Code"] in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise NotFoundError(f"no such queue: {queue}") from error
        raise


def _from_dict(doc: dict) -> CleanedLine:
    return CleanedLine(
        doc["line"],
        doc["status"],
        RecordIds(**doc["ids"]),
        doc["removed"],
        body=doc["body"],
        attributes=doc["attributes"],
        original_quarantine_id=doc["original_quarantine_id"],
        key_changes=doc["key_changes"],
    )


def _inject(operator, queue: str, replays: list[CleanedLine], reason: str, outcome: PatchOutcome, on_record):
    new_ids = operator.inject_replays(queue, replays, reason, outcome.patch_id)
    outcome.injected += len(new_ids)
    for replay, new_id in zip(replays, new_ids, strict=True):
        on_record(replay, new_id)


def _quarantine_originals(operator, spool_path: Path, reason: str, outcome: PatchOutcome) -> None:
    already = set(operator.quarantine.ids())
    with spool_path.open("rb") as spool:
        for line in spool:
            replay = _from_dict(orjson.loads(line))
            record_id = replay.original_quarantine_id
            if record_id is None:
                outcome.warnings.append(
                    f"line {replay.line}: the original is not a landing record the pipeline reads, so the "
                    "quarantine cannot mask it: its batch will fail the audit again"
                )
                continue
            if record_id in already:
                continue
            operator.quarantine_add(
                record_id,
                f"{reason}: replaced by a cleaned replay (patch {outcome.patch_id}, line {replay.line})",
            )
            already.add(record_id)
            outcome.quarantined += 1
