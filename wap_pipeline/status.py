"""What a user asks about first: row counts per layer, queue and DLQ depth, breaker, bookmark."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pyiceberg.table import Table

from wap_pipeline import aws
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import ensure_tables
from wap_pipeline.ingest.landing import list_objects
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.settings import Settings
from wap_pipeline.state import sent_counts


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
    batches_published: int
    bookmark: dict | None

    @property
    def accounted(self) -> int:
        """Sent messages that are somewhere final: curated, the DLQ or the quarantine."""
        return self.curated_rows + self.dlq_depth + self.quarantined

    @property
    def identity_holds(self) -> bool:
        return self.queue_depth == 0 and self.queue_in_flight == 0 and self.accounted == self.messages_sent

    def as_dict(self) -> dict:
        return {**asdict(self), "accounted": self.accounted, "identity_holds": self.identity_holds}


def row_count(table: Table) -> int:
    """Rows on main, from the snapshot summary (PyIceberg deletes are copy-on-write, so it is exact)."""
    head = table.current_snapshot()
    if head is None or head.summary is None:
        return 0
    return int(head.summary.get("total-records") or 0)


def _depth(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def collect(settings: Settings) -> Status:
    tables = ensure_tables(load_wap_catalog(settings))
    sqs = aws.client("sqs", settings)
    visible, in_flight = _depth(sqs, queue_url(sqs, settings.queue_name))
    dlq_visible, dlq_in_flight = _depth(sqs, queue_url(sqs, settings.dlq_name))
    dynamodb = aws.client("dynamodb", settings)
    breaker = CircuitBreaker(dynamodb, settings.breaker_table, settings.pipeline_name).state()
    landed = list_objects(aws.client("s3", settings), settings.landing_bucket, settings.landing_prefix)
    return Status(
        messages_sent=sum(sent_counts(settings).values()),
        files_landed=len(landed),
        raw_rows=row_count(tables["raw"]),
        standardized_rows=row_count(tables["standardized"]),
        curated_rows=row_count(tables["curated"]),
        queue_depth=visible,
        queue_in_flight=in_flight,
        dlq_depth=dlq_visible + dlq_in_flight,
        breaker=breaker.status,
        breaker_reason=breaker.reason,
        quarantined=Quarantine(dynamodb, settings.quarantine_table).count(),
        batches_published=len(wap.published_batches(tables["standardized"])),
        bookmark=wap.bookmark(tables["standardized"]),
    )
