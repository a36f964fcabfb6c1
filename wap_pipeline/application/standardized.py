"""Publish one batch to standardized by Write-Audit-Publish. No Dagster here: the asset translates each
outcome into an ``AssetCheckResult``, a ``MaterializeResult`` or a ``Failure``.

1. read the batch from raw, mask quarantined records (unless replays data-patcher granted), parse into
   the table's typed schema -- a schema mismatch stops the batch, naming the fields, and writes nothing;
2. WRITE: a new branch ``audit_batch_<id>`` (or ``..._retry_<n>``) at main's head and ONE commit of the
   batch to it, with the batch id and ingest bookmark in the snapshot summary;
3. AUDIT the batch's rows on the branch; the verdict is handed to the caller *before* publishing, so a
   crash right after the fast-forward never leaves a published batch whose audit was not recorded;
4. PUBLISH by fast-forwarding main to the branch -- data and bookmark in one atomic ref update.

A failed audit abandons the branch (kept for inspection, with its retention recorded). A publish that
lost to another writer abandons its branch too; the retried step writes a new one from the new head.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from pyiceberg.table import Table

from wap_pipeline.engines import Engine, Standardization, StandardizedBatch
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import payload_fields, top_level_columns
from wap_pipeline.rules.audit import AuditResult
from wap_pipeline.rules.standardize import Grants, SchemaMismatchError


class NotInRawError(RuntimeError):
    """The batch has no commit in raw: raw/events must be materialized for it first."""


@dataclass(frozen=True)
class StandardizePorts:
    """What publishing a batch needs, each a plain object or function (tests pass their own)."""

    engine: Engine
    raw: Table
    standardized: Table
    read_quarantine: Callable[[], Collection[str]]
    """Start reading every quarantined id (it may run in the background until first used)."""
    grants_of: Callable[[list[str]], Grants]
    batch_ids_after: Callable[[str], list[str]]
    abandoned_branch_retention_ms: int
    now: Callable[[], datetime]


@dataclass(frozen=True)
class AlreadyPublished:
    batch_id: str


@dataclass(frozen=True)
class SchemaRejected:
    """Nothing was written: no branch, no commit, the bookmark did not move."""

    batch_id: str
    error: SchemaMismatchError


@dataclass(frozen=True)
class Audited:
    """The audit's verdict on the branch. Failed: the branch is abandoned and the batch stops here."""

    batch_id: str
    branch: str
    reference: datetime
    audit: AuditResult
    written: StandardizedBatch

    @property
    def passed(self) -> bool:
        return self.audit.passed


@dataclass(frozen=True)
class Published:
    batch_id: str
    branch: str
    written: StandardizedBatch
    snapshot_id: int
    bookmark: str


StandardizeOutcome = AlreadyPublished | SchemaRejected | Audited | Published


def publish_batch(ports: StandardizePorts, batch_id: str) -> Iterator[StandardizeOutcome]:
    """Yield what happened, in order: :class:`AlreadyPublished`; or :class:`SchemaRejected`; or
    :class:`Audited`, then -- only if it passed -- :class:`Published`. Raises :class:`NotInRawError`,
    and ``wap.NotFastForwardError`` when another writer moved main (the branch is abandoned first)."""
    table, io = ports.standardized, ports.engine
    if wap.is_published(table, batch_id):
        yield AlreadyPublished(batch_id)
        return
    raw_snapshot = wap.published_snapshot(ports.raw, batch_id)
    if raw_snapshot is None:
        # Maintenance keeps raw's commit of every batch not yet published downstream.
        raise NotInRawError(f"batch {batch_id} is not in raw yet; materialize raw/events for it first")
    bookmark = raw_snapshot.summary.get(wap.BOOKMARK_PROPERTY, "")
    # The audit's time reference belongs to the batch (when it landed), so any re-run -- a retry, a
    # re-drive next week -- gives the same verdict; `standardized_at` is lineage only.
    reference = wap.landed_at(raw_snapshot)
    # The scan of every quarantined id runs in the background while the first chunk is read and
    # parsed: the filter first waits for it there.
    quarantined = ports.read_quarantine()
    job = Standardization(
        payload_fields(table.schema()), tuple(top_level_columns(table.schema())), ports.now(), reference
    )
    branch = wap.next_branch_name(table, batch_id)

    def properties(skipped: int, unauthorized: int) -> Mapping[str, str]:
        return {
            wap.BATCH_ID_PROPERTY: batch_id,
            wap.BOOKMARK_PROPERTY: bookmark,
            wap.QUARANTINED_ROWS_PROPERTY: str(skipped),
            wap.AUDIT_BRANCH_PROPERTY: branch,
            **wap.ledger_properties(table, batch_id, ports.batch_ids_after),
            wap.UNAUTHORIZED_REPLAYS_PROPERTY: str(unauthorized),
        }

    try:
        # Parse, mask, tag (every rule is row-local), then a new branch at main's head and ONE commit
        # of the batch to it: a schema mismatch anywhere leaves no branch and no commit.
        written = io.standardize_to_branch(
            ports.raw, table, batch_id, branch, job, quarantined, ports.grants_of, properties
        )
    except SchemaMismatchError as error:
        yield SchemaRejected(batch_id, error)
        return
    fault_point("standardized.after_branch_write")
    audited = Audited(
        batch_id,
        branch,
        reference,
        io.audit_batch(table, branch, batch_id),
        written,
    )
    fault_point("standardized.after_audit")
    if not audited.passed:
        reason = f"audit failed: {audited.audit.invalid_rows} invalid"
        wap.abandon_branch(table, branch, reason, ports.abandoned_branch_retention_ms)
        yield audited
        return
    yield audited
    try:
        head = io.fast_forward(table, branch)
    except wap.NotFastForwardError as error:
        wap.abandon_branch(table, branch, str(error), ports.abandoned_branch_retention_ms)
        raise
    fault_point("standardized.after_publish")
    yield Published(batch_id, branch, written, head.snapshot_id, bookmark)
