"""One settings object for the whole project, read from the environment.

Two profiles, chosen by ``WAP_PROFILE``:

* ``local`` (default): every AWS client points at the local server on 127.0.0.1 (port
  ``WAP_LOCAL_PORT``, default 4566) with dummy credentials. ``AWS_ENDPOINT_URL`` still wins when set,
  so tests can put the fault proxy in between.
* ``aws``: boto3's standard resolution (``AWS_ENDPOINT_URL``, the credentials chain); the region is
  ``WAP_REGION``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. No endpoint or credential is hard-coded
  for this profile.

Resource names are settings with defaults; each reads ``WAP_<NAME>`` (e.g. ``WAP_QUEUE_NAME``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

ENGINES = ("arrow", "spark")
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class Settings:
    profile: str = "local"
    local_port: int = 4566
    region: str = "us-east-1"
    queue_name: str = "ingest-events"
    dlq_name: str = "ingest-events-dlq"
    # S3 ObjectCreated notifications of the landing prefix: how the landing sensor learns of new files.
    landing_events_queue: str = "wap-landing-events"
    # The reconciliation flags a landed object in no manifest once it is this old (a notification
    # lost), looking back this far (Firehose retries a delivery for up to 24 hours).
    reconcile_after_minutes: int = 15
    reconcile_window_hours: int = 48
    max_receive_count: int = 3
    # Short locally so malformed messages reach the DLQ in seconds; set it higher on AWS.
    visibility_timeout_s: int = 5
    queue_retention_s: int = 4 * 24 * 3600
    dlq_retention_s: int = 14 * 24 * 3600
    stream_name: str = "ingest-events-stream"
    firehose_role_arn: str = "arn:aws:iam::123456789012:role/wap-firehose-delivery"
    landing_bucket: str = "wap-landing"
    landing_prefix: str = "landing/"
    # Batch manifests: which landing files make up which batch (the partition key).
    manifests_prefix: str = "batches/"
    patches_prefix: str = "patches/"
    # Where Firehose writes the records it could not deliver (its ErrorOutputPrefix).
    firehose_errors_prefix: str = "landing-errors/"
    # The forwarder's receipts (wap_pipeline.ingest.receipts): what it forwarded and rejected, per group.
    forward_receipts_prefix: str = "forwarded/"
    warehouse_bucket: str = "wap-warehouse"
    breaker_table: str = "wap-circuit-breaker"
    quarantine_table: str = "wap-quarantine"
    audit_table: str = "wap-operator-audit"
    # data-patcher's replay grants: only replays with a grant bypass the quarantine (rules/replays.py).
    replay_grants_table: str = "wap-replay-grants"
    # SNS topic the alerts sensor publishes to (breaker trips, DLQ growth); locally also delivered to
    # the SQS queue `<topic>-local`, subscribed by `provision`, so a delivery can be seen and tested.
    alerts_topic: str = "wap-pipeline-alerts"
    # One writer per Iceberg table (wap_pipeline.iceberg.lease): the lease items, how long a lease
    # lasts without renewal (a crashed holder on another host blocks the table that long), and how
    # long a writer waits for a busy table before its step fails (and is retried).
    writer_lease_table: str = "wap-writer-leases"
    writer_lease_ttl_s: float = 60.0
    writer_lease_wait_s: float = 300.0
    pipeline_name: str = "standard_ingest"
    catalog_name: str = "wap"
    # Local state: SQLite catalog, warehouse, server pid/log, Dagster home.
    state_dir: str = ".wap"
    # A batch groups at most this many landing files.
    batch_max_files: int = 200
    # Messages forwarded per PutRecordBatch (Firehose allows 500). Small groups keep few messages in
    # flight, which the local server needs (its receive cost grows with the in-flight count).
    forward_batch_records: int = 30
    # Long-poll wait of each receive: a drain run keeps going while messages keep arriving.
    receive_wait_s: int = 1
    # Payloads larger or more deeply nested than this are malformed (they end in the DLQ).
    max_payload_bytes: int = 128 * 1024
    max_payload_depth: int = 32
    # One drain run forwards at most this many messages, so that batches stay a sensible size.
    ingest_max_messages_per_run: int = 2000
    aws_max_attempts: int = 8
    # DLQ depth at which the operations/dlq check warns, and at which it is an error.
    dlq_warn_depth: int = 1
    dlq_error_depth: int = 100
    # Steps retry transient errors (network, throttling past botocore's budget) this many times,
    # waiting retry_delay_s, then doubling: 5 x 2 s covers an outage of about a minute.
    step_retries: int = 5
    step_retry_delay_s: float = 2.0
    # Abandoned audit branches are kept this long for inspection, then removed by maintenance.
    abandoned_branch_retention_hours: int = 14 * 24
    # Table maintenance (daily, and `wap-pipeline maintain`) expires snapshots older than this.
    maintain_older_than_hours: int = 7 * 24
    # Curated looks for earlier copies of a batch's keys within this many days of event time around
    # the batch's own events (see wap_pipeline.rules.curated); wider costs more per batch.
    curated_dedup_window_days: int = 7
    # The curated freshness check fails when a batch published to standardized has waited longer
    # than this for curated.
    curated_max_lag_minutes: int = 30
    # The curated step compacts each day its batch touched once the day holds this many small files
    # (every batch adds one per day it touches); 0 turns compaction off.
    curated_compact_min_files: int = 8
    # What data-patcher may touch (comma-separated). Empty: the ingest queue / the landing bucket only.
    patcher_allowed_queues: str = ""
    patcher_allowed_buckets: str = ""
    # A module whose hooks() acts at the pipeline's failure boundaries and on each AWS client it makes
    # (wap_pipeline.hooks). Empty: no hooks. The tests name their failpoint plugin here.
    hooks_module: str = ""
    # How standardized and curated are computed: "arrow" (PyIceberg + Arrow, in-process) or "spark"
    # (dagster-pyspark + Iceberg's Spark runtime, same catalog). WAP_ENGINE overrides the resource config.
    engine: str = "arrow"
    # The Spark engine's master: local[*] (this process), spark://host:7077 (a standalone cluster), yarn;
    # empty: the master spark-submit was given (Glue, EMR). The resource's spark_config wins.
    spark_master: str = "local[*]"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"WAP_{f.name.upper()}")
            if raw is None:
                continue
            convert = {"int": int, "float": float}.get(f.type, str)  # annotations are strings here
            try:
                values[f.name] = convert(raw)
            except ValueError as error:
                raise ValueError(f"WAP_{f.name.upper()}={raw!r} is not a valid {f.type}") from error
        if values.get("profile") == "aws" and "region" not in values:
            # The region boto3 itself would use: every client is given one explicitly.
            region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if region:
                values["region"] = region
        settings = cls(**values)
        if settings.profile not in ("local", "aws"):
            raise ValueError(f"WAP_PROFILE must be 'local' or 'aws', not {settings.profile!r}")
        if settings.engine not in ENGINES:
            raise ValueError(f"WAP_ENGINE must be one of {', '.join(ENGINES)}, not {settings.engine!r}")
        return settings

    @property
    def payload_limits(self):
        from wap_pipeline.rules.envelope import PayloadLimits

        return PayloadLimits(self.max_payload_bytes, self.max_payload_depth)

    @property
    def abandoned_branch_retention_ms(self) -> int:
        return self.abandoned_branch_retention_hours * 3600_000

    @property
    def allowed_queues(self) -> frozenset[str]:
        """Queues data-patcher may send to (``WAP_PATCHER_ALLOWED_QUEUES``; default: the ingest queue)."""
        return _names(self.patcher_allowed_queues) or frozenset({self.queue_name})

    @property
    def allowed_buckets(self) -> frozenset[str]:
        """Buckets data-patcher may read and write patches in (``WAP_PATCHER_ALLOWED_BUCKETS``;
        default: the landing bucket)."""
        return _names(self.patcher_allowed_buckets) or frozenset({self.landing_bucket})

    @property
    def is_local(self) -> bool:
        return self.profile == "local"

    @property
    def local_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def endpoint_url(self) -> str | None:
        """The AWS endpoint: AWS_ENDPOINT_URL when set, the local server in the local profile."""
        explicit = os.environ.get("AWS_ENDPOINT_URL")
        if explicit:
            return explicit
        return self.local_endpoint if self.is_local else None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).resolve()


def _names(value: str) -> frozenset[str]:
    return frozenset(name.strip() for name in value.split(",") if name.strip())
