"""What a user asks about first: where every message is, overall and per batch, and whether the
accounting identity holds.

Per batch (from the snapshot summaries each layer commits, and the batch's latest audit branch; a
batch whose later commits were expired by maintenance is listed as such -- its identity was checked
when it was committed, by the blocking checks):

    landed (raw rows) = quarantined (masked) + published to standardized       once published
    published         = inserted + superseded + skipped as duplicates          once curated

Overall: every message sent (as far as this project knows: the ledger `wap-pipeline send` keeps; a
re-injected replay is not a new message) is in exactly one final place -- curated, the quarantine
(quarantined ids whose fixed replay is not in curated; a replay in curated counts once, in curated),
the DLQ, or purged from the DLQ by an operator (a recorded decision: the operator audit log lists every
purged message id) -- with nothing left in the queue and every batch's identity holding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow.compute as pc
from pyiceberg.expressions import In
from pyiceberg.table import Table

from wap_pipeline import aws
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import ensure_tables
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.ingest.landing import list_objects
from wap_pipeline.operations.audit_log import AuditLog
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.rules.quarantine import RECORD_ID_COLUMN
from wap_pipeline.settings import Settings
from wap_pipeline.state import NOT_NEW_MESSAGES, sent_counts


@dataclass
class BatchAccount:
    batch_id: str
    landed: int
    quarantined: int | None = None
    invalid: int | None = None
    published: int | None = None
    inserted: int | None = None
    superseded: int | None = None
    skipped: int | None = None
    history_expired: bool = False
    unauthorized_replays: int | None = None
    """Rows claiming to be replays without data-patcher's grant (treated as not replays)."""

    @property
    def state(self) -> str:
        if self.history_expired:
            return "curated (commits expired)"
        if self.inserted is not None:
            return "curated"
        if self.published is not None:
            return "published, not yet curated"
        if self.invalid:
            return "failed audit"
        return "pending"

    @property
    def identity_holds(self) -> bool:
        """Every row of the batch is accounted for at each layer it has reached."""
        if self.history_expired:
            return True  # the per-batch counts are gone; the overall identity still holds or not
        if self.published is None:
            return False
        if self.landed != (self.quarantined or 0) + self.published:
            return False
        if self.inserted is None:
            return False
        return self.published == self.inserted + (self.superseded or 0) + (self.skipped or 0)

    def as_dict(self) -> dict:
        return {**asdict(self), "state": self.state, "identity_holds": self.identity_holds}


@dataclass
class Status:
    messages_sent: int
    files_landed: int
    raw_rows: int
    standardized_rows: int
    curated_rows: int
    queue_depth: int
    queue_in_flight: int
    dlq_depth: int
    breaker: str
    breaker_reason: str
    quarantined: int
    quarantined_replayed: int
    dlq_purged: int
    batches_published: int
    bookmark: dict | None
    batches: list[BatchAccount] = field(default_factory=list)

    @property
    def masked_rows(self) -> int:
        return sum(b.quarantined or 0 for b in self.batches)

    @property
    def unauthorized_replays(self) -> int:
        return sum(b.unauthorized_replays or 0 for b in self.batches)

    @property
    def invalid_rows(self) -> int:
        return sum(b.invalid or 0 for b in self.batches if b.published is None)

    @property
    def accounted(self) -> int:
        """Sent messages that are somewhere final: curated, the DLQ (or purged from it, recorded), or
        the quarantine (without a replay in curated -- that one is counted in curated)."""
        return (
            self.curated_rows
            + self.dlq_depth
            + self.dlq_purged
            + self.quarantined
            - self.quarantined_replayed
        )

    @property
    def identity_holds(self) -> bool:
        return (
            self.queue_depth == 0
            and self.queue_in_flight == 0
            and self.accounted == self.messages_sent
            and all(b.identity_holds for b in self.batches)
        )

    def as_dict(self) -> dict:
        document = asdict(self)
        document["batches"] = [b.as_dict() for b in self.batches]
        return {
            **document,
            "masked_rows": self.masked_rows,
            "unauthorized_replays": self.unauthorized_replays,
            "invalid_rows": self.invalid_rows,
            "accounted": self.accounted,
            "identity_holds": self.identity_holds,
        }


def _summary_int(snapshot, key: str) -> int | None:
    if snapshot is None or snapshot.summary is None or snapshot.summary.get(key) is None:
        return None
    return int(snapshot.summary.get(key))


def batch_accounts(tables: dict[str, Table]) -> list[BatchAccount]:
    """One account per batch that reached raw, oldest first."""
    raw, standardized, curated = tables["raw"], tables["standardized"], tables["curated"]
    accounts = []
    for batch_id in wap.published_batches(raw):
        account = BatchAccount(
            batch_id, _summary_int(wap.published_snapshot(raw, batch_id), "added-records") or 0
        )
        published = wap.published_snapshot(standardized, batch_id)
        if published is not None:
            # An empty append (every record of the batch quarantined) has no added-records: 0 published.
            account.published = _summary_int(published, "added-records") or 0
            account.quarantined = _summary_int(published, wap.QUARANTINED_ROWS_PROPERTY) or 0
            account.unauthorized_replays = _summary_int(published, wap.UNAUTHORIZED_REPLAYS_PROPERTY) or 0
            account.invalid = 0
        else:
            branches = wap.branches_of_batch(standardized, batch_id)
            if branches:
                latest = standardized.metadata.snapshot_by_id(
                    standardized.metadata.refs[branches[-1]].snapshot_id
                )
                account.quarantined = _summary_int(latest, wap.QUARANTINED_ROWS_PROPERTY)
                account.unauthorized_replays = _summary_int(latest, wap.UNAUTHORIZED_REPLAYS_PROPERTY)
                flags = wap.scan_batch(standardized, branches[-1], batch_id, ("invalid_flag",))[
                    "invalid_flag"
                ]
                account.invalid = int(pc.sum(pc.cast(flags, "int64")).as_py() or 0)
        merged = wap.batch_snapshots(curated, batch_id)
        if (published is None or not merged) and all(
            wap.is_published(t, batch_id) for t in (standardized, curated)
        ):
            account.history_expired = True
        if merged:
            last = merged[-1]
            account.inserted = _summary_int(last, wap.CURATED_INSERTED)
            account.superseded = _summary_int(last, wap.CURATED_SUPERSEDED)
            account.skipped = _summary_int(last, wap.CURATED_SKIPPED)
        accounts.append(account)
    return accounts


def quarantined_in_curated(curated: Table, ids: set[str]) -> int:
    """How many quarantined ids have a (replayed) row in curated."""
    if not ids or curated.current_snapshot() is None:
        return 0
    found = curated.scan(
        row_filter=In(RECORD_ID_COLUMN, list(ids)), selected_fields=(RECORD_ID_COLUMN,)
    ).to_arrow()
    return len(pc.unique(found[RECORD_ID_COLUMN]))


def collect(settings: Settings) -> Status:
    tables = ensure_tables(load_wap_catalog(settings))
    sqs = aws.client("sqs", settings)
    visible, in_flight = sqs_calls.depth(sqs, queue_url(sqs, settings.queue_name))
    dlq_visible, dlq_in_flight = sqs_calls.depth(sqs, queue_url(sqs, settings.dlq_name))
    dynamodb = aws.client("dynamodb", settings)
    breaker = CircuitBreaker(dynamodb, settings.breaker_table, settings.pipeline_name).state()
    landed = list_objects(aws.client("s3", settings), settings.landing_bucket, settings.landing_prefix)
    quarantined = Quarantine(dynamodb, settings.quarantine_table).ids()
    sent = sent_counts(settings)
    return Status(
        messages_sent=sum(count for kind, count in sent.items() if kind not in NOT_NEW_MESSAGES),
        files_landed=len(landed),
        raw_rows=wap.row_count(tables["raw"]),
        standardized_rows=wap.row_count(tables["standardized"]),
        curated_rows=wap.row_count(tables["curated"]),
        queue_depth=visible,
        queue_in_flight=in_flight,
        dlq_depth=dlq_visible + dlq_in_flight,
        breaker=breaker.status,
        breaker_reason=breaker.reason,
        quarantined=len(quarantined),
        quarantined_replayed=quarantined_in_curated(tables["curated"], set(quarantined)),
        dlq_purged=sum(
            len(entry.details.get("message_ids", []))
            for entry in AuditLog(dynamodb, settings.audit_table).entries()
            if entry.action == "dlq.purge"
        ),
        batches_published=len(wap.published_batches(tables["standardized"])),
        bookmark=wap.bookmark(tables["standardized"]),
        batches=batch_accounts(tables),
    )
