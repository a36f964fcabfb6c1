"""Load one landed batch into raw, as it came, in one commit. No Dagster here: the asset translates the
outcome.

The batch's manifest names its landing files. They are read with the next ones in flight and written
chunk by chunk (:class:`~wap_pipeline.iceberg.wap.StagedAppend`), so memory follows a chunk, not the
batch, and the batch is one commit. The commit records the batch id, the input bookmark (the batch's
newest landing key) and the landing time, which the later layers' audits and the ledger read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from pyiceberg.table import Table

from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import RAW_SCHEMA
from wap_pipeline.ingest.landing import LandingObject, Manifest
from wap_pipeline.rules.envelope import raw_table


@dataclass(frozen=True)
class LoadPorts:
    raw: Table
    read_manifest: Callable[[str], Manifest]
    """The manifest of a batch id."""
    read_files: Callable[[Manifest], Iterable[tuple[LandingObject, bytes]]]
    """Each landing file of a manifest with its content, in manifest order."""
    batch_ids_after: Callable[[str], list[str]]
    now: Callable[[], datetime]


@dataclass(frozen=True)
class AlreadyLoaded:
    batch_id: str


@dataclass(frozen=True)
class Loaded:
    batch_id: str
    rows: int
    manifest: Manifest


def load_batch(ports: LoadPorts, batch_id: str) -> AlreadyLoaded | Loaded:
    """Every line of the batch's landing files into raw, in one commit -- unless raw holds the batch."""
    table = ports.raw
    if wap.is_published(table, batch_id):
        return AlreadyLoaded(batch_id)
    manifest = ports.read_manifest(batch_id)
    ingested_at = ports.now()
    with wap.StagedAppend(table) as staged:
        staged.write_all(_chunks(ports.read_files(manifest), batch_id, ingested_at))
        staged.commit(
            {
                wap.BATCH_ID_PROPERTY: batch_id,
                wap.BOOKMARK_PROPERTY: manifest.bookmark,
                wap.LANDED_AT_PROPERTY: manifest.landed_at.isoformat(),
                **wap.ledger_properties(table, batch_id, ports.batch_ids_after),
            }
        )
    fault_point("raw.after_append")
    return Loaded(batch_id, staged.rows, manifest)


def _chunks(
    files: Iterable[tuple[LandingObject, bytes]], batch_id: str, ingested_at: datetime
) -> Iterator[pa.Table]:
    """The batch's raw rows, landing file after landing file, in chunks of at most about
    ``CHUNK_BYTES`` of NDJSON (a chunk is closed before a file would take it past that, so its size
    does not follow the landing files' size): only one chunk is in memory while its data file is
    written."""
    schema = RAW_SCHEMA.as_arrow()
    group: list[pa.Table] = []
    size = 0
    for landed, data in files:
        if group and size + len(data) > wap.CHUNK_BYTES:
            yield pa.concat_tables(group)
            group, size = [], 0
        size += len(data)
        group.append(raw_table(data, landed.key, batch_id, ingested_at, schema))  # parsed vectorised
        del data
    if group:
        yield pa.concat_tables(group)
