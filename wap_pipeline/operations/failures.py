"""Which batches failed and were not published, and the records to quarantine for each.

The answer is read from the stores themselves -- the tables and the breaker -- not from a run log:
a batch failed in standardized when it has an abandoned audit branch (or the breaker names it) and
main never published it. Its records are found by doing what a re-run would do: the raw rows of
the batch, minus what the quarantine now masks, audited with the batch's own reference time. So
after ``data-patcher quarantine add`` of every id listed, the batch lists no record: it is ready
for ``resume-pipeline``. Each record is named by its quarantine id, exactly as ``quarantine add``
takes it (``event_id``, or ``message:<id>`` for a record without a usable one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass

from pyiceberg.table import Table

from wap_pipeline.iceberg import wap
from wap_pipeline.resources.breaker import BreakerState
from wap_pipeline.rules.cleaning import audit_reasons
from wap_pipeline.rules.replays import granted_tokens
from wap_pipeline.rules.standardize import Grants, quarantine_split

STANDARDIZED_STEP = "standardized"
_RETRY = re.compile(r"_retry_\d+$")


@dataclass(frozen=True)
class FailedRecord:
    quarantine_id: str
    reasons: list[str]


@dataclass(frozen=True)
class FailedBatch:
    batch_id: str
    step: str
    error: str
    records: list[FailedRecord]

    def as_dict(self) -> dict:
        return asdict(self)


def _abandoned_batches(standardized: Table) -> dict[str, str]:
    """Batch id -> the reason recorded on its newest abandoned audit branch."""
    found: dict[str, str] = {}
    for name, value in sorted(standardized.metadata.properties.items()):
        if name.startswith(wap.ABANDONED_PROPERTY_PREFIX):
            branch = name[len(wap.ABANDONED_PROPERTY_PREFIX) :]
            batch = _RETRY.sub("", branch[len(wap.BRANCH_PREFIX) :])
            found[batch] = value.partition("|")[2]
    return found


def _step_of(breaker: BreakerState) -> str:
    """``dagster:curated/events`` -> ``curated``."""
    return breaker.tripped_by.rpartition(":")[2].split("/")[0] or STANDARDIZED_STEP


def failed_records(
    raw: Table,
    batch_id: str,
    fields: dict[str, object],
    quarantined: Collection[str],
    grants_of: Callable[[list[str]], Grants],
) -> list[FailedRecord]:
    """The batch's records that a re-run would still reject, with why, by quarantine id.
    ``grants_of(tokens)``: data-patcher's replay grants, which a re-run honours too."""
    raw_snapshot = wap.published_snapshot(raw, batch_id)
    if raw_snapshot is None:
        return []
    rows = wap.scan_batch(raw, wap.MAIN, batch_id)
    tokens = granted_tokens(rows)
    kept, kept_ids = quarantine_split(rows, quarantined, grants_of(tokens) if tokens else {})
    reasons = audit_reasons(kept.to_pylist(), fields, wap.landed_at(raw_snapshot))
    by_id: dict[str, list[str]] = {}
    for record_id, why in zip(kept_ids.to_pylist(), reasons, strict=True):
        if why:
            by_id.setdefault(record_id, [])
            by_id[record_id].extend(r for r in why if r not in by_id[record_id])
    return [FailedRecord(record_id, why) for record_id, why in sorted(by_id.items())]


def failed_batches(
    standardized: Table,
    raw: Table,
    breaker: BreakerState,
    fields: dict[str, object],
    quarantined: Collection[str],
    grants_of: Callable[[list[str]], Grants],
) -> list[FailedBatch]:
    """Every failed, unpublished batch, oldest first, with the records to quarantine."""
    standardized.refresh()
    published = wap.ledger(standardized)
    errors = {
        batch: reason for batch, reason in _abandoned_batches(standardized).items() if batch not in published
    }
    breaker_step = _step_of(breaker) if breaker.is_red and breaker.batch_id else None
    if breaker_step == STANDARDIZED_STEP and breaker.batch_id not in published:
        errors[breaker.batch_id] = breaker.reason
    batches = [
        FailedBatch(
            batch, STANDARDIZED_STEP, error, failed_records(raw, batch, fields, quarantined, grants_of)
        )
        for batch, error in sorted(errors.items())
    ]
    if breaker_step not in (None, STANDARDIZED_STEP):
        # Failed after standardized published it: no record can be masked there any more.
        batches.append(FailedBatch(breaker.batch_id, breaker_step, breaker.reason, []))
    return batches
