"""`wap-pipeline maintain` and the daily maintenance job: one pass over every table.

Per table, oldest layer first: remove audit branches that main has taken and abandoned ones past
their retention (standardized), expire snapshots older than the cut-off, delete orphan files; then
compact curated's days. A layer's commits of batches that the next layer has not taken yet are kept
whatever their age (the next step reads their summaries): the report names the batch that held
expiry back, which is also the batch an operator should look at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pyiceberg.table import Table

from wap_pipeline.iceberg import compaction, maintenance, wap

# Tables in pipeline order: each layer's batches are taken by the next.
LAYERS = ("raw", "standardized", "curated", "daily_totals")
# Never delete a file younger than this as an orphan, whatever --older-than says: a write in flight
# has files that no snapshot names yet.
ORPHAN_SAFETY_MARGIN = timedelta(hours=1)
DEFAULT_OLDER_THAN = timedelta(days=7)


@dataclass
class MaintenanceReport:
    older_than_s: float
    dry_run: bool
    tables: list[maintenance.TableMaintenance] = field(default_factory=list)
    compacted_days: list[str] = field(default_factory=list)
    compacted_files: str = ""

    def as_dict(self) -> dict:
        return {
            "older_than_s": self.older_than_s,
            "dry_run": self.dry_run,
            "tables": [t.as_dict() for t in self.tables],
            "compacted_days": self.compacted_days,
            "compacted_files": self.compacted_files,
        }


def _ledger(tables: dict[str, Table], layer: str) -> wap.Ledger:
    # daily_totals is recomputed by every batch: a table trimmed before it carried a ledger is fine.
    return wap.ledger(tables[layer], lost_ok=layer == "daily_totals")


def oldest_untaken(
    table: Table, held: wap.Ledger, taken: wap.Ledger, known_after: Callable[[str], Iterable[str]]
) -> tuple[str, int] | None:
    """The oldest commit (batch id, time) of a batch ``table`` holds that the next layer has not
    taken: the batches above the next layer's watermark are this ledger's own plus the manifests."""
    candidates = set(held.batches) | set(known_after(taken.low))
    pending = {b for b in candidates if b in held and b not in taken}
    oldest = None
    for snapshot in wap.history(table.metadata, wap.main_snapshot(table)):
        batch = snapshot.summary.get(wap.BATCH_ID_PROPERTY) if snapshot.summary is not None else None
        if batch in pending:
            oldest = (batch, snapshot.timestamp_ms)
    return oldest


def maintain(
    tables: dict[str, Table],
    known_after: Callable[[str], Iterable[str]],
    now: datetime,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    unfinished_branch_retention_ms: int | None = None,
    compact_min_files: int = 0,
) -> MaintenanceReport:
    """One maintenance pass; ``known_after(low)`` lists the batch ids after ``low`` (the manifests)."""
    report = MaintenanceReport(older_than.total_seconds(), dry_run)
    now_ms = int(now.timestamp() * 1000)
    cutoff_ms = now_ms - int(older_than.total_seconds() * 1000)
    orphan_cutoff_ms = min(cutoff_ms, now_ms - int(ORPHAN_SAFETY_MARGIN.total_seconds() * 1000))
    for position, layer in enumerate(LAYERS):
        table = tables[layer]
        table.refresh()
        done = maintenance.TableMaintenance(".".join(table.name()))
        if layer == "standardized":
            published = maintenance.published_branches(table)
            if not dry_run:
                maintenance.remove_branches(table, published)
            expired = wap.remove_expired_branches(
                table, now_ms, unfinished_branch_retention_ms, dry_run=dry_run
            )
            done.branches_removed = published + expired
        cutoff = cutoff_ms
        if position + 1 < len(LAYERS):
            hold = oldest_untaken(
                table, _ledger(tables, layer), _ledger(tables, LAYERS[position + 1]), known_after
            )
            if hold is not None and hold[1] <= cutoff:
                done.held_by, cutoff = hold[0], hold[1]
        done.snapshots_expired = maintenance.expire_snapshots(
            table, cutoff, dry_run, lost_ok=layer == "daily_totals"
        )
        orphans = maintenance.delete_orphan_files(table, orphan_cutoff_ms, dry_run)
        done.orphan_files = [location for location, _ in orphans]
        done.orphan_bytes = sum(size for _, size in orphans)
        report.tables.append(done)
    curated = tables["curated"]
    days = compaction.all_days(curated)
    if dry_run:
        planned = compaction.plan_compaction(curated, days, compact_min_files)
        report.compacted_days = [d.isoformat() for d in sorted(planned)]
    else:
        result = compaction.compact_days(curated, days, compact_min_files)
        report.compacted_days = [d.isoformat() for d in result.days]
        report.compacted_files = f"{result.files_before} -> {result.files_after}" if result.days else ""
    return report
