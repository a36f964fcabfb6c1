"""Table maintenance that every production Iceberg table needs: expire snapshots, remove finished
audit branches, delete orphan files.

Safe to run at any time because no decision of the pipeline reads history: "is batch B in this
table?" is the head's :class:`~wap_pipeline.iceberg.wap.Ledger`. What a later step still reads is
kept: the newest commit carrying the ledger, branch and tag heads (Iceberg protects them), and --
through ``hold_from_ms`` -- the commits of batches that the next layer has not taken yet (their summary
holds the bookmark, the landing time, the row counts that step reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table

from wap_pipeline.iceberg import wap


@dataclass
class TableMaintenance:
    """What maintenance did (or, dry, would do) to one table."""

    table: str
    snapshots_expired: list[int] = field(default_factory=list)
    held_by: str | None = None
    branches_removed: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    orphan_bytes: int = 0

    def as_dict(self) -> dict:
        return {
            "table": self.table,
            "snapshots_expired": len(self.snapshots_expired),
            "held_by": self.held_by,
            "branches_removed": self.branches_removed,
            "orphan_files_deleted": len(self.orphan_files),
            "orphan_bytes": self.orphan_bytes,
        }


def expirable_snapshots(table: Table, cutoff_ms: int) -> list[int]:
    """Snapshots committed before ``cutoff_ms`` that nothing needs: not a branch or tag head, and not
    main's head or anything between it and the newest commit carrying the ledger (a compaction or
    another writer's commit may be on top of it)."""
    table.refresh()
    metadata = table.metadata
    keep = {ref.snapshot_id for ref in metadata.refs.values()}
    # Main from its head back to the newest commit carrying the ledger, that one included: expiring a
    # snapshot in between would cut the parent chain by which the ledger is found.
    for snapshot in wap.history(metadata, wap.main_snapshot(table)):
        keep.add(snapshot.snapshot_id)
        if (
            snapshot.summary is not None
            and wap.LEDGER_BATCHES_PROPERTY in snapshot.summary.additional_properties
        ):
            break
    return [
        s.snapshot_id for s in metadata.snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep
    ]


def expire_snapshots(table: Table, cutoff_ms: int, dry_run: bool = False, lost_ok: bool = False) -> list[int]:
    """Expire :func:`expirable_snapshots` in one commit (metadata only: files go with orphan removal).

    A table whose main carries no ledger yet (written before commits carried one, or only by other
    writers) first gets one, derived from its whole history, in an empty commit: expiry would
    otherwise take away what its ledger is derived from.
    """
    table.refresh()
    if not dry_run and table.current_snapshot() is not None and wap.ledger_snapshot(table) is None:
        wap.record_ledger(table, lost_ok)
    expired = expirable_snapshots(table, cutoff_ms)
    if expired and not dry_run:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return expired


def published_branches(table: Table) -> list[str]:
    """Audit branches whose head main has taken: a fast-forward made them part of main, so the
    branch shows nothing main does not (abandoned branches are kept for inspection until their
    retention passes; see :func:`wap.remove_expired_branches`)."""
    table.refresh()
    on_main = {s.snapshot_id for s in wap.history(table.metadata, wap.main_snapshot(table))}
    held = wap.ledger(table)
    return sorted(
        name
        for name, ref in table.metadata.refs.items()
        if name.startswith(wap.BRANCH_PREFIX)
        and ref.snapshot_id in on_main
        and wap.batch_of_branch(name) in held
    )


def remove_branches(table: Table, names: list[str]) -> None:
    if names:
        manage = table.manage_snapshots()
        for name in names:
            manage = manage.remove_branch(name)
        manage.commit()


def _referenced_files(table: Table) -> set[str]:
    """Every file a retained snapshot or the metadata log points at, as a location: manifest lists,
    manifests, and the live data and delete files of each manifest."""
    table.refresh()
    metadata, io = table.metadata, table.io
    files = {entry.metadata_file for entry in metadata.metadata_log} | {table.metadata_location}
    manifests = {}
    for snapshot in metadata.snapshots:
        files.add(snapshot.manifest_list)
        manifests.update((m.manifest_path, m) for m in snapshot.manifests(io))
    files |= set(manifests)
    for manifest in manifests.values():
        files |= {entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io)}
    return files


def orphan_files(table: Table, older_than_ms: int) -> list[tuple[str, int]]:
    """Files under the table's location that no retained snapshot, manifest or metadata file names,
    last modified before ``older_than_ms`` (a margin so that a write in flight is never taken for an
    orphan): data files of expired snapshots, of a failed write, old metadata versions."""
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise NotImplementedError(f"orphan-file listing needs PyArrow's FileIO, not {type(io).__name__}")
    from pyarrow.fs import FileSelector, FileType

    scheme, netloc, root = PyArrowFileIO.parse_location(table.location(), io.properties)
    filesystem = io.fs_by_scheme(scheme, netloc)
    referenced = {PyArrowFileIO.parse_location(f, io.properties)[2] for f in _referenced_files(table)}
    found = []
    for info in filesystem.get_file_info(FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type != FileType.File or info.path in referenced:
            continue
        if info.mtime is not None and info.mtime.timestamp() * 1000 < older_than_ms:
            found.append(
                (f"{scheme}://{netloc}{info.path}" if scheme != "file" else f"file://{info.path}", info.size)
            )
    return sorted(found)


def delete_orphan_files(table: Table, older_than_ms: int, dry_run: bool = False) -> list[tuple[str, int]]:
    orphans = orphan_files(table, older_than_ms)
    if not dry_run:
        for location, _ in orphans:
            table.io.delete(location)
    return orphans
