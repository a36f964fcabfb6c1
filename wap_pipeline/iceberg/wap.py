"""Write-Audit-Publish on an Iceberg table, with PyIceberg 0.12.

PyIceberg has no fast-forward: :func:`fast_forward` refreshes the table, checks that main's head is
an ancestor of the branch head, and only then moves main. The ref update still carries Iceberg's
compare-and-swap on main, so a concurrent commit between the check and the update fails the commit
instead of being silently discarded.

The batch id and the ingest bookmark travel in the snapshot summary of the commit that the branch
points at, so fast-forwarding main publishes data and bookmark in one atomic ref update.

"Is batch B already in this table?" is answered by the table's :class:`Ledger`, which every batch
commit carries forward in its summary (as the Iceberg Kafka Connect sink carries its offsets): the
answer needs the head, not the history, so expiring old snapshots changes no decision.

Every layer writes a batch through :class:`StagedAppend`: data files are written chunk by chunk as
the chunks are produced (memory follows a chunk, not the batch), then ONE fast-append commits them all
-- one atomic snapshot per batch, exactly as a single ``append`` of the whole batch would.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import pyarrow as pa
from pyiceberg.expressions import BooleanExpression, EqualTo
from pyiceberg.io.pyarrow import ArrowScan, _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

MAIN = "main"
BATCH_ID_PROPERTY = "wap.batch-id"
BOOKMARK_PROPERTY = "ingest.bookmark"
# When the batch's newest landing file landed (ISO-8601, from its manifest), in raw's commit of the
# batch: the audit's time reference, so that re-auditing the batch later gives the same verdict.
LANDED_AT_PROPERTY = "ingest.landed-at"
# The audit branch a standardized commit was written to (and main fast-forwarded from): lineage that
# survives the branch's removal by maintenance.
AUDIT_BRANCH_PROPERTY = "wap.audit-branch"
# Rows of the batch masked by the quarantine filter (for the accounting in `wap-pipeline status`).
QUARANTINED_ROWS_PROPERTY = "wap.quarantined-rows"
# Rows of the batch that claimed to be replays without data-patcher's grant (treated as not replays).
UNAUTHORIZED_REPLAYS_PROPERTY = "wap.unauthorized-replays"
# A curated commit's accounting: standardized rows of the batch = inserted + superseded + skipped.
CURATED_STANDARDIZED_ROWS = "wap.curated.standardized-rows"
CURATED_INSERTED = "wap.curated.inserted"
CURATED_SUPERSEDED = "wap.curated.superseded"
CURATED_SKIPPED = "wap.curated.skipped"
CURATED_TOUCHED_DAYS = "wap.curated.touched-days"
CURATED_WINDOW = "wap.curated.window"
# Rows on curated main just before the batch's commit: the commit must add exactly the inserted rows.
CURATED_TOTAL_BEFORE = "wap.curated.total-before"
# The ledger carried by every batch commit: a low watermark (every batch id <= it is in the table)
# and the batch ids above it that are in the table (sorted, comma-separated).
LEDGER_LOW_PROPERTY = "wap.ledger.low"
LEDGER_BATCHES_PROPERTY = "wap.ledger.batches"
BRANCH_PREFIX = "audit_batch_"
# Recorded on each abandoned branch (as a property of the table) since PyIceberg resets ref
# retention on append and never enforces it; cleanup reads these.
ABANDONED_PROPERTY_PREFIX = "wap.abandoned."

# Arrow bytes of one chunk a layer processes and writes as a data file: the unit of memory of a batch
# (a batch of 1M landing lines is ~600 MB of Arrow; chunks of this size keep the peak far below that).
CHUNK_BYTES = 64 * 2**20

_RETRY_SUFFIX = re.compile(r"_retry_\d+$")
_VALID_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class LedgerLostError(RuntimeError):
    """Main's history was expired past every commit that carried the ledger: refuse to guess."""


class NotFastForwardError(RuntimeError):
    """Main has moved to a snapshot that is not an ancestor of the branch head: refuse to publish."""


def validate_batch_id(batch_id: str) -> str:
    if not _VALID_BATCH_ID.match(batch_id):
        raise ValueError(f"invalid batch id {batch_id!r}: letters, digits, '_', '.', '-' (max 128)")
    return batch_id


def branch_name(batch_id: str, attempt: int = 0) -> str:
    """``audit_batch_<id>`` for the first attempt, ``audit_batch_<id>_retry_<n>`` for retries."""
    validate_batch_id(batch_id)
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    base = f"{BRANCH_PREFIX}{batch_id}"
    return base if attempt == 0 else f"{base}_retry_{attempt}"


def next_branch_name(table: Table, batch_id: str) -> str:
    """The first branch name for this batch that does not exist yet (abandoned ones are kept)."""
    refs = table.metadata.refs
    attempt = 0
    while branch_name(batch_id, attempt) in refs:
        attempt += 1
    return branch_name(batch_id, attempt)


def batch_of_branch(name: str) -> str:
    """``audit_batch_<id>[_retry_<n>]`` -> ``<id>``."""
    return _RETRY_SUFFIX.sub("", name[len(BRANCH_PREFIX) :])


def branches_of_batch(table: Table, batch_id: str) -> list[str]:
    base = branch_name(batch_id)
    return sorted(name for name in table.metadata.refs if name == base or name.startswith(f"{base}_retry_"))


def main_snapshot(table: Table) -> Snapshot | None:
    return table.current_snapshot()


def history(metadata: TableMetadata, head: Snapshot | None) -> Iterator[Snapshot]:
    """``head`` and its ancestors, newest first.

    PyIceberg's ``ancestors_of`` finds each parent with ``snapshot_by_id``, a linear scan of every
    snapshot of the table, so a walk costs (history x history); every batch walks main's history
    several times ("already published?", the checks, status). One id index makes a walk linear.
    """
    by_id = {snapshot.snapshot_id: snapshot for snapshot in metadata.snapshots}
    snapshot = head
    while snapshot is not None:
        yield snapshot
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None


def _batch_of(snapshot: Snapshot) -> str | None:
    return snapshot.summary.get(BATCH_ID_PROPERTY) if snapshot.summary is not None else None


@dataclass(frozen=True)
class Ledger:
    """Which batches a table holds, carried in the summary of every batch commit.

    ``low`` is a low watermark -- every batch id up to it (in string order, the order of manifests and
    of batch ids) is in the table -- and ``batches`` the ids above it that are. A commit adds its batch
    and advances the watermark over the run of known batch ids (the manifests, oldest first) that the
    table holds, so the set stays as small as the batches in flight. The watermark is only advanced
    over ids the caller listed: an id nobody listed is never assumed.
    """

    low: str = ""
    batches: frozenset[str] = frozenset()

    def __contains__(self, batch_id: str) -> bool:
        return (bool(self.low) and batch_id <= self.low) or batch_id in self.batches

    def with_batch(self, batch_id: str, known_after_low: Iterable[str] = ()) -> Ledger:
        """This ledger plus ``batch_id``, the watermark advanced over ``known_after_low`` (every batch
        id above ``low`` that exists, e.g. the manifests listed after it) while they are held."""
        batches, low = set(self.batches) | {validate_batch_id(batch_id)}, self.low
        for known in sorted(k for k in known_after_low if k > low):
            if known not in batches:
                break
            low = known
        return Ledger(low, frozenset(b for b in batches if b > low))

    def properties(self) -> dict[str, str]:
        return {LEDGER_LOW_PROPERTY: self.low, LEDGER_BATCHES_PROPERTY: ",".join(sorted(self.batches))}

    @classmethod
    def from_summary(cls, summary: Mapping[str, str]) -> Ledger | None:
        if LEDGER_BATCHES_PROPERTY not in summary:
            return None
        batches = summary[LEDGER_BATCHES_PROPERTY]
        return cls(summary.get(LEDGER_LOW_PROPERTY, ""), frozenset(b for b in batches.split(",") if b))


def ledger_snapshot(table: Table) -> Snapshot | None:
    """The newest snapshot on main that carries the ledger (a compaction commit does not): maintenance
    never expires it."""
    for snapshot in history(table.metadata, main_snapshot(table)):
        if snapshot.summary is not None and LEDGER_BATCHES_PROPERTY in snapshot.summary.additional_properties:
            return snapshot
    return None


def ledger(table: Table, lost_ok: bool = False) -> Ledger:
    """The batches ``table`` holds on main, from the newest commit that carries the ledger.

    A table written before commits carried one has its whole history (nothing expired it): its ledger
    is derived from the batch ids there. If history was expired and no ledger is left, raise instead
    of answering "not there" and re-applying old batches -- unless ``lost_ok`` (a table recomputed by
    every batch, where re-applying one changes no row), which then starts from what is left.
    """
    table.refresh()
    snapshot = ledger_snapshot(table)
    if snapshot is not None:
        return Ledger.from_summary(snapshot.summary.additional_properties)
    walked = list(history(table.metadata, main_snapshot(table)))
    # Expiry clears the parent id of the oldest snapshot it keeps, so a cut history shows only in the
    # sequence numbers: the table's first commit (always on main) has sequence number 1.
    if walked and (walked[-1].sequence_number or 1) > 1 and not lost_ok:
        raise LedgerLostError(
            f"main of {'.'.join(table.name())} has no commit with a ledger and its history was expired "
            f"(its oldest snapshot {walked[-1].snapshot_id} is not the table's first)"
        )
    return Ledger(batches=frozenset(b for s in walked if (b := _batch_of(s))))


def record_ledger(table: Table, lost_ok: bool = False) -> Snapshot:
    """Commit the table's ledger, as derived now, in an empty commit (before history is expired from a
    table whose main carries none)."""
    derived = ledger(table, lost_ok)
    table.append(table.schema().as_arrow().empty_table(), snapshot_properties=derived.properties())
    return main_snapshot(table)


def is_published(table: Table, batch_id: str) -> bool:
    """Is ``batch_id`` in ``table``'s main? The idempotency guard of every layer; needs only the head."""
    return batch_id in ledger(table)


def ledger_properties(
    table: Table, batch_id: str, known_after_low: Callable[[str], Iterable[str]], lost_ok: bool = False
) -> dict[str, str]:
    """The summary entries of a commit that adds ``batch_id`` to main: the head's ledger plus the
    batch. ``known_after_low(low)`` lists the batch ids that exist above ``low`` (the manifests)."""
    current = ledger(table, lost_ok)
    return current.with_batch(batch_id, known_after_low(current.low)).properties()


def create_branch_from_main(table: Table, name: str) -> int:
    """Create ``name`` at main's head and return the head's snapshot id.

    An empty table first gets an empty commit on main, so that every audit branch has main as its
    parent: a branch is never created by appending to a missing ref (PyIceberg would make an orphan).
    """
    table.refresh()
    if name in table.metadata.refs:
        raise ValueError(f"branch {name} already exists; a retry must use a new branch")
    if main_snapshot(table) is None:
        table.append(table.schema().as_arrow().empty_table(), snapshot_properties={"wap.initial": "true"})
    head = main_snapshot(table)
    table.manage_snapshots().create_branch(snapshot_id=head.snapshot_id, branch_name=name).commit()
    return head.snapshot_id


class StagedAppend:
    """Data files of one append, written chunk by chunk, committed as ONE snapshot.

    Why: ``Table.append`` of a whole batch holds the batch plus PyIceberg's per-partition copies
    while it writes. Here each chunk's data files are written as soon as the chunk exists (and the
    chunk can be freed), and :meth:`commit` adds every file in one fast-append -- the same single,
    atomic snapshot (same summary properties) as one ``append``. Until then the table is unchanged.

    Use it as a context manager: an exception before :meth:`commit` deletes the files written so
    far (nothing references them). Once a commit has been attempted, files are left alone: whether
    it landed may be unknown, and an unreferenced file is harmless (orphan-file maintenance).
    """

    def __init__(self, table: Table):
        self.table = table
        self.data_files: list[DataFile] = []
        self.rows = 0
        self._write_uuid = uuid.uuid4()
        self._counter = itertools.count(0)
        self._commit_attempted = False

    def __enter__(self) -> StagedAppend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is not None and not self._commit_attempted:
            self.discard()

    def write(self, chunk: pa.Table) -> None:
        """Write ``chunk`` (columns named as the table's) as data files of the table's layout."""
        if chunk.num_rows == 0:
            return
        metadata = self.table.metadata
        target = metadata.schema().as_arrow()
        chunk = chunk.select(target.names).cast(target)
        _check_pyarrow_schema_compatible(
            metadata.schema(), provided_schema=chunk.schema, format_version=metadata.format_version
        )
        self.data_files.extend(
            _dataframe_to_data_files(
                table_metadata=metadata,
                df=chunk,
                io=self.table.io,
                write_uuid=self._write_uuid,
                counter=self._counter,
            )
        )
        self.rows += chunk.num_rows

    def write_all(self, chunks: Iterable[pa.Table]) -> StagedAppend:
        for chunk in chunks:
            self.write(chunk)
        return self

    def commit(
        self, properties: Mapping[str, str], branch: str = MAIN, transaction: Transaction | None = None
    ) -> None:
        """One fast-append of every written file on ``branch`` with ``properties`` in its summary.

        With ``transaction`` the append is staged in it (after what the caller staged, e.g. deletes)
        and the caller commits; without, it is committed here.
        """
        self._commit_attempted = True
        tx = transaction if transaction is not None else self.table.transaction()
        summary = {k: str(v) for k, v in properties.items()}
        with tx.update_snapshot(snapshot_properties=summary, branch=branch).fast_append() as append:
            for data_file in self.data_files:
                append.append_data_file(data_file)
        if transaction is None:
            tx.commit_transaction()

    def discard(self) -> None:
        """Delete the files written (best effort: they are in no snapshot)."""
        for data_file in self.data_files:
            with contextlib.suppress(Exception):
                self.table.io.delete(data_file.file_path)
        self.data_files.clear()


def write_new_branch(
    table: Table, name: str, chunks: Iterable[pa.Table], properties: Callable[[], Mapping[str, str]]
) -> int:
    """Write every chunk, then create ``name`` at main's head and commit the chunks to it in one
    snapshot with ``properties()`` in its summary; return the rows written.

    The branch is created only after the last chunk is written: a chunk that raises (a schema
    mismatch found while standardizing) leaves no branch and no commit -- the table is untouched.
    ``properties`` is called then, so the summary can count what the chunks found.
    """
    with StagedAppend(table) as staged:
        staged.write_all(chunks)
        create_branch_from_main(table, name)
        staged.commit(properties(), branch=name)
        return staged.rows


def scan_batch(table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)) -> pa.Table:
    """The rows of one batch as seen from ``ref`` (a branch holds main's rows plus the batch)."""
    return (
        table.scan(row_filter=EqualTo("batch_id", batch_id), selected_fields=selected_fields)
        .use_ref(ref)
        .to_arrow()
    )


def scan_batch_chunks(
    table: Table, ref: str, batch_id: str, selected_fields: tuple[str, ...] = ("*",)
) -> Iterator[pa.Table]:
    """:func:`scan_batch` one data file at a time (see :func:`scan_chunks`)."""
    return scan_chunks(table, EqualTo("batch_id", batch_id), selected_fields, ref)


def scan_chunks(
    table: Table,
    row_filter: BooleanExpression,
    selected_fields: tuple[str, ...] = ("*",),
    ref: str = MAIN,
) -> Iterator[pa.Table]:
    """The rows of ``ref`` matching ``row_filter``, one data file at a time: PyIceberg's batch reader
    (``to_arrow_batch_reader``) reads every file concurrently and buffers them, which holds the whole
    scan when the consumer is slower."""
    scan = table.scan(row_filter=row_filter, selected_fields=selected_fields).use_ref(ref)
    reader = ArrowScan(
        table_metadata=scan.table_metadata,
        io=scan.io,
        projected_schema=scan.projection(),
        row_filter=scan.row_filter,
        case_sensitive=scan.case_sensitive,
    )
    for task in scan.plan_files():
        chunk = reader.to_table([task])
        if chunk.num_rows:
            yield chunk


def fast_forward(table: Table, branch: str) -> Snapshot:
    """Move main to the head of ``branch`` if and only if that is a fast-forward."""
    table.refresh()
    metadata = table.metadata
    if branch not in metadata.refs:
        raise ValueError(f"no branch {branch}")
    branch_head = metadata.snapshot_by_id(metadata.refs[branch].snapshot_id)
    main_head = main_snapshot(table)
    if main_head is not None:
        ancestry = {s.snapshot_id for s in history(metadata, branch_head)}
        if main_head.snapshot_id not in ancestry:
            raise NotFastForwardError(
                f"main is at snapshot {main_head.snapshot_id}, which is not an ancestor of {branch} "
                f"(head {branch_head.snapshot_id}): main moved after the branch was created"
            )
    table.manage_snapshots().set_current_snapshot(snapshot_id=branch_head.snapshot_id).commit()
    return branch_head


def row_count(table: Table) -> int:
    """Rows on main, from the snapshot summary (PyIceberg deletes are copy-on-write, so it is exact)."""
    head = main_snapshot(table)
    if head is None or head.summary is None:
        return 0
    return int(head.summary.get("total-records") or 0)


def published_snapshot(table: Table, batch_id: str) -> Snapshot | None:
    """The snapshot on main's history that published ``batch_id``, if any (the idempotency guard:
    the whole history is searched, so a re-run of any old batch is recognised; it stops at the first
    match, and a recent batch is near the head)."""
    table.refresh()
    for snapshot in history(table.metadata, main_snapshot(table)):
        if _batch_of(snapshot) == batch_id:
            return snapshot
    return None


def landed_at(snapshot: Snapshot) -> datetime:
    """The reference time of the batch that ``snapshot`` (raw's commit of it) loaded: its landing time
    as recorded in that commit, or -- for a commit written before it was recorded -- the commit's own
    time. Both are fixed once written, so the batch's verdict never depends on when it is audited."""
    recorded = (snapshot.summary or {}).get(LANDED_AT_PROPERTY)
    if recorded:
        return datetime.fromisoformat(recorded)
    return datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=UTC)


def batch_snapshots(table: Table, batch_id: str) -> list[Snapshot]:
    """The snapshots on main's history that carry ``batch_id``, oldest first (a transaction that
    deletes and appends commits two).

    A batch's snapshots are one commit -- one transaction, or one fast-forward of a branch -- so they
    are consecutive on main: the walk stops at the first snapshot past them.
    """
    table.refresh()
    found: list[Snapshot] = []
    for snapshot in history(table.metadata, main_snapshot(table)):
        if _batch_of(snapshot) == batch_id:
            found.append(snapshot)
        elif found:
            break
    return found[::-1]


def published_batches(table: Table) -> list[str]:
    """Batch ids published on main, oldest first, each once (a curated batch commits two snapshots)."""
    batches = [b for s in history(table.metadata, main_snapshot(table)) if (b := _batch_of(s))]
    return list(dict.fromkeys(reversed(batches)))


def bookmark(table: Table) -> dict[str, str] | None:
    """Batch id and ingest bookmark of the last publish on main."""
    for snapshot in history(table.metadata, main_snapshot(table)):
        summary = snapshot.summary
        if summary is not None and summary.get(BATCH_ID_PROPERTY):
            return {
                "batch_id": summary.get(BATCH_ID_PROPERTY),
                "bookmark": summary.get(BOOKMARK_PROPERTY, ""),
            }
    return None


def expire_history(table: Table, keep: int) -> list[int]:
    """Forget all but the newest ``keep`` snapshots of main's history, once it holds twice that many.

    Only for a table whose history nobody reads -- ``curated/daily_totals``, recomputed from curated by
    every batch. Every commit PyIceberg makes deep-copies the table's metadata several times, so a
    table whose snapshots only accumulate makes each commit slower than the last. Branch and tag
    heads are never expired (PyIceberg protects them). Data files are not deleted (PyIceberg's expiry
    removes metadata only); orphan-file removal is a separate maintenance job.
    """
    table.refresh()
    on_main = list(history(table.metadata, main_snapshot(table)))
    if keep < 1 or len(table.metadata.snapshots) < 2 * keep:
        return []
    kept = {s.snapshot_id for s in on_main[:keep]}
    expired = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in kept]
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    expired = [snapshot_id for snapshot_id in expired if snapshot_id not in protected]
    if expired:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return expired


def abandon_branch(table: Table, branch: str, reason: str, retention_ms: int) -> None:
    """Freeze a failed branch: it is never modified or published; record when it may be removed.

    The table property is what our maintenance reads; the ref's own ``max-ref-age-ms`` says the same
    to Java/Spark maintenance (set after the last append to the branch, which would reset it).
    """
    expires = int(time.time() * 1000) + retention_ms
    with table.transaction() as tx:
        tx.set_properties({f"{ABANDONED_PROPERTY_PREFIX}{branch}": f"{expires}|{reason[:200]}"})
    head = table.metadata.refs[branch].snapshot_id
    table.manage_snapshots().create_branch(head, branch, max_ref_age_ms=max(retention_ms, 1)).commit()


def _unfinished_branches(table: Table) -> list[tuple[str, int]]:
    """Audit branches that were neither published nor abandoned -- their run died before it could
    record either -- with the time of their head snapshot."""
    head = main_snapshot(table)
    on_main = {s.snapshot_id for s in history(table.metadata, head)}
    found = []
    for name, ref in table.metadata.refs.items():
        if (
            not name.startswith(BRANCH_PREFIX)
            or f"{ABANDONED_PROPERTY_PREFIX}{name}" in table.metadata.properties
        ):
            continue
        snapshot = table.metadata.snapshot_by_id(ref.snapshot_id)
        batch = batch_of_branch(name)
        written = snapshot.summary is not None and snapshot.summary.get(BATCH_ID_PROPERTY) == batch
        if not (written and ref.snapshot_id in on_main):
            found.append((name, snapshot.timestamp_ms))
    return found


def remove_expired_branches(
    table: Table,
    now_ms: int | None = None,
    unfinished_retention_ms: int | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Remove abandoned branches whose recorded retention has passed (our own retention policy), and,
    with ``unfinished_retention_ms``, branches of runs that died mid-batch once that long has passed
    since their last write (a retry never reuses them: it writes a new branch). ``dry_run``: only name them."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    table.refresh()
    expired = []
    for key, value in table.metadata.properties.items():
        if not key.startswith(ABANDONED_PROPERTY_PREFIX):
            continue
        branch = key[len(ABANDONED_PROPERTY_PREFIX) :]
        expires = int(value.split("|", 1)[0])
        if expires <= now_ms:
            expired.append((key, branch))
    unfinished = []
    if unfinished_retention_ms is not None:
        unfinished = [
            name
            for name, written in _unfinished_branches(table)
            if written + unfinished_retention_ms <= now_ms
        ]
    if dry_run or (not expired and not unfinished):
        return [branch for _, branch in expired] + unfinished
    manage = table.manage_snapshots()
    for branch in [b for _, b in expired] + unfinished:
        if branch in table.metadata.refs:
            manage = manage.remove_branch(branch)
    manage.commit()
    if expired:
        with table.transaction() as tx:
            tx.remove_properties(*[key for key, _ in expired])
    return [branch for _, branch in expired] + unfinished
