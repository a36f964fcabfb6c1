"""Merge one published standardized batch into curated, as one atomic commit, then compact the days it
touched. No Dagster here: the asset translates the outcome.

The engine plans the merge (:mod:`wap_pipeline.rules.curated`) against the curated rows of the keys the
batch touches -- looked up only inside the batch's deduplication window, so the cost follows the batch,
not the table's history -- and commits the deletes of superseded rows and the inserts in a single
transaction: a crash commits nothing. The commit's snapshot summary records the batch's accounting,
which curated's checks verify against what Iceberg actually committed.

Then, under the same writer lease, the days the batch touched are compacted once they hold
``compact_min_files`` small files (:mod:`wap_pipeline.iceberg.compaction`). The compaction commit
changes no row and carries no batch id, so the batch's own commit stays the one the checks read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pyiceberg.table import Table

from wap_pipeline.engines import Engine, MergeSummary
from wap_pipeline.hooks import fault_point
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.compaction import CompactionResult


class NotInStandardizedError(RuntimeError):
    """The batch is not published in standardized: it cannot be curated yet."""


@dataclass(frozen=True)
class CuratePorts:
    engine: Engine
    standardized: Table
    curated: Table
    batch_ids_after: Callable[[str], list[str]]
    dedup_window_days: int
    compact_min_files: int
    now: Callable[[], datetime]


@dataclass(frozen=True)
class AlreadyMerged:
    batch_id: str


@dataclass(frozen=True)
class Merged:
    batch_id: str
    summary: MergeSummary
    compacted: CompactionResult


def curated_commit_summary(table: Table, batch_id: str) -> dict[str, str] | None:
    """The accounting properties of the commit that merged ``batch_id`` (None if not merged)."""
    snapshots = wap.batch_snapshots(table, batch_id)
    return dict(snapshots[-1].summary.additional_properties) if snapshots else None


def merge_batch(ports: CuratePorts, batch_id: str) -> AlreadyMerged | Merged:
    """Raises :class:`NotInStandardizedError` when standardized has not published the batch."""
    table, io = ports.curated, ports.engine
    if wap.is_published(table, batch_id):
        return AlreadyMerged(batch_id)
    if not wap.is_published(ports.standardized, batch_id):
        raise NotInStandardizedError(
            f"batch {batch_id} is not published in standardized; it cannot be curated"
        )

    def properties(summary: MergeSummary) -> dict[str, str]:
        window = summary.window
        return {
            wap.BATCH_ID_PROPERTY: batch_id,
            wap.CURATED_STANDARDIZED_ROWS: str(summary.standardized_rows),
            wap.CURATED_INSERTED: str(summary.inserted),
            wap.CURATED_SUPERSEDED: str(summary.superseded),
            wap.CURATED_SKIPPED: str(summary.skipped),
            wap.CURATED_TOUCHED_DAYS: ",".join(day.isoformat() for day in summary.touched_days),
            wap.CURATED_WINDOW: f"{window.start.isoformat()}/{window.end.isoformat()}" if window else "",
            wap.CURATED_TOTAL_BEFORE: str(wap.row_count(table)),
            **wap.ledger_properties(table, batch_id, ports.batch_ids_after),
        }

    summary = io.merge_batch(
        ports.standardized, table, batch_id, ports.now(), ports.dedup_window_days, properties
    )
    fault_point("curated.after_commit")
    compacted = io.compact_days(table, summary.touched_days, ports.compact_min_files)
    return Merged(batch_id, summary, compacted)


@dataclass(frozen=True)
class RowAccounting:
    """Whether a merged batch's rows add up: every standardized row inserted, superseding or skipped
    as a duplicate, and curated grown by exactly the inserted rows (from the two commits' summaries).
    ``problem`` says why there is nothing to count; ``expired``: the commits were expired after the
    batch was merged (a re-run of an old batch commits nothing), nothing to check."""

    batch_id: str
    standardized_rows: int = 0
    inserted: int = 0
    superseded: int = 0
    skipped: int = 0
    total_before: int = 0
    total_after: int = 0
    problem: str | None = None
    expired: bool = False

    @property
    def net_new_rows(self) -> int:
        return self.total_after - self.total_before

    @property
    def holds(self) -> bool:
        if self.expired:
            return True
        accounted = self.inserted + self.superseded + self.skipped
        return (
            self.problem is None
            and accounted == self.standardized_rows
            and self.net_new_rows == self.inserted
        )

    def why(self) -> str:
        if self.problem is not None:
            return self.problem
        return (
            f"standardized {self.standardized_rows} vs inserted {self.inserted} + superseded {self.superseded}"
            f" + skipped {self.skipped}; curated grew by {self.net_new_rows}"
        )


def account_rows(standardized: Table, curated: Table, batch_id: str) -> RowAccounting:
    """The row accounting of ``batch_id``'s merge, from what Iceberg committed."""
    published = wap.published_snapshot(standardized, batch_id)
    snapshots = wap.batch_snapshots(curated, batch_id)
    if published is None or not snapshots:
        if wap.is_published(standardized, batch_id) and wap.is_published(curated, batch_id):
            return RowAccounting(batch_id, expired=True)
        return RowAccounting(batch_id, problem="batch missing from standardized or curated")
    summary = snapshots[-1].summary.additional_properties
    return RowAccounting(
        batch_id,
        standardized_rows=int(published.summary.additional_properties.get("added-records", "0")),
        inserted=int(summary[wap.CURATED_INSERTED]),
        superseded=int(summary[wap.CURATED_SUPERSEDED]),
        skipped=int(summary[wap.CURATED_SKIPPED]),
        total_before=int(summary[wap.CURATED_TOTAL_BEFORE]),
        total_after=int(summary.get("total-records", "0")),
    )


@dataclass(frozen=True)
class CuratedLag:
    pending: list[str]
    """Batches standardized published that curated has not merged, oldest first."""
    oldest_lag_s: float
    """How long ago standardized published the oldest of them."""


def curated_lag(
    standardized: Table, curated: Table, batch_ids_after: Callable[[str], list[str]], now: datetime
) -> CuratedLag:
    """What standardized holds that curated does not yet: the batches above curated's watermark that
    standardized has, whether above its own watermark or passed by it (the manifests after curated's)."""
    published, merged = wap.ledger(standardized), wap.ledger(curated)
    candidates = set(published.batches) | set(batch_ids_after(merged.low))
    pending = sorted(b for b in candidates if b in published and b not in merged)
    if not pending:
        return CuratedLag([], 0.0)
    # Maintenance keeps standardized's commit of a batch that curated has not merged yet.
    snapshot = wap.published_snapshot(standardized, pending[0])
    lag_s = max(0.0, now.timestamp() - snapshot.timestamp_ms / 1000) if snapshot else 0.0
    return CuratedLag(pending, lag_s)
