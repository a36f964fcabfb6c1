"""Small helpers shared by the integration tests: send bodies, read tables, read the breaker."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import orjson

from wap_pipeline import aws
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import load_tables
from wap_pipeline.ingest.producer import send_bodies
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import BreakerState, CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.resources.replay_grants import ReplayGrants
from wap_pipeline.settings import Settings
from wap_pipeline.state import record_sent


def send(settings: Settings, events: list[dict], attributes: list[dict] | None = None) -> list[str]:
    """Send events as the producer would, and record them in the sent ledger."""
    return send_raw(settings, [orjson.dumps(e).decode() for e in events], attributes)


def send_raw(settings: Settings, bodies: list[str], attributes: list[dict] | None = None) -> list[str]:
    """Send bodies exactly as given (malformed ones too), and record them in the sent ledger."""
    sqs = aws.client("sqs", settings)
    ids = send_bodies(sqs, queue_url(sqs, settings.queue_name), bodies, attributes)
    replays = sum(1 for a in attributes or [] if a.get("is_replay") == "true")
    record_sent(settings, len(bodies) - replays)
    if replays:
        record_sent(settings, replays, kind="replay")
    return ids


def dlq_messages(settings: Settings) -> list:
    from wap_pipeline.ingest.dlq import browse

    sqs = aws.client("sqs", settings)
    return browse(sqs, queue_url(sqs, settings.dlq_name))


def tables(settings: Settings) -> dict:
    return load_tables(load_wap_catalog(settings))


def curated_key_counts(settings: Settings) -> Counter:
    curated = tables(settings)["curated"]
    return Counter(
        curated.scan(selected_fields=("idempotency_key",)).to_arrow()["idempotency_key"].to_pylist()
    )


def breaker_state(settings: Settings) -> BreakerState:
    return CircuitBreaker(
        aws.client("dynamodb", settings), settings.breaker_table, settings.pipeline_name
    ).state()


def quarantine(settings: Settings) -> Quarantine:
    return Quarantine(aws.client("dynamodb", settings), settings.quarantine_table)


def replay_grants(settings: Settings) -> ReplayGrants:
    return ReplayGrants(aws.client("dynamodb", settings), settings.replay_grants_table)


def check_evaluations(asset: list[str], check_name: str) -> list:
    """Evaluations (passed, metadata, partition) of one asset check on the instance, newest first."""
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    with DagsterInstance.get() as instance:
        records = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey(asset), check_name), limit=100
        )
    return [
        r.event.dagster_event.event_specific_data
        for r in records
        if r.event is not None and r.event.dagster_event is not None
    ]


def latest_partition_runs(job_name: str = "standard_ingest") -> dict[str, list]:
    """Runs of the pipeline job by partition, newest first."""
    from dagster import DagsterInstance, RunsFilter

    runs: dict[str, list] = {}
    with DagsterInstance.get() as instance:
        for run in instance.get_runs(RunsFilter(job_name=job_name)):
            runs.setdefault(run.tags.get("dagster/partition"), []).append(run)
    return runs


def land_file(
    settings: Settings, bodies: list[str], hour_folder: datetime | None = None, forwarded: bool = True
) -> tuple[str, list[str]]:
    """One landing file as Firehose writes it after buffering many messages (locally each
    PutRecordBatch becomes its own small file): one landing envelope per line, built by the
    forwarder's own function. Recorded in the sent ledger and in a forwarder receipt. Returns (key, message ids by line).

    ``hour_folder``: name the file after that time instead of now, as Firehose names a delivery it
    retried for hours after its oldest record's arrival (a late file). ``forwarded=False``: a file
    written behind the forwarder's back, which no receipt explains."""
    import uuid
    from datetime import UTC

    from wap_pipeline.ingest.receipts import ForwardReceipt, receipt_log
    from wap_pipeline.rules.envelope import landing_line, to_landing_record

    now = datetime.now(UTC)
    message_ids = [str(uuid.uuid4()) for _ in bodies]
    data = b"".join(
        landing_line(
            to_landing_record(
                {
                    "MessageId": message_id,
                    "Body": body,
                    "Attributes": {
                        "SentTimestamp": str(int(now.timestamp() * 1000)),
                        "ApproximateReceiveCount": "1",
                    },
                }
            )
        )
        for message_id, body in zip(message_ids, bodies, strict=True)
    )
    named = hour_folder or now
    key = (
        f"{settings.landing_prefix}{named:%Y/%m/%d/%H}/"
        f"{settings.stream_name}-1-{named:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
    )
    s3 = aws.client("s3", settings)
    s3.put_object(Bucket=settings.landing_bucket, Key=key, Body=data)
    # What the forwarder that put these records would have recorded (wap_pipeline.ingest.receipts).
    if forwarded:
        receipt_log(s3, settings).write(ForwardReceipt(named, {m: m for m in message_ids}))
    record_sent(settings, len(bodies))
    return key, message_ids


def assert_calls_allowed(call_log, settings: Settings) -> None:
    """Every AWS call recorded in ``call_log`` (``WAP_AWS_CALL_LOG``) is one the patcher's IAM
    permissions list (wap_pipeline_tests/permissions.py) allows."""
    from fnmatch import fnmatchcase

    from wap_pipeline_tests.permissions import permissions, required_permission

    with open(call_log, "rb") as log:
        calls = [orjson.loads(line) for line in log]
    assert calls, "no AWS call was recorded"
    granted = permissions(settings)
    missing = {
        required_permission(call)
        for call in calls
        if not any(
            action == required_permission(call)[0] and fnmatchcase(required_permission(call)[1], resource)
            for action, resource in granted
        )
    }
    assert not missing, f"calls the patcher's IAM permissions do not cover: {sorted(missing)}"


_EDITOR = """import sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
open(path, "w", encoding="utf-8").write(text.replace({old!r}, {new!r}) + "\\n")
"""


def scripted_editor(directory, old: str, new: str) -> str:
    """An $EDITOR for `data-patcher dlq edit`: replaces ``old`` with ``new`` in the file it is given and
    saves it with the newline editors add, as a person would. Returns the EDITOR value."""
    import sys
    import uuid
    from pathlib import Path

    script = Path(directory) / f"editor-{uuid.uuid4().hex[:8]}.py"
    script.write_text(_EDITOR.format(old=old, new=new))
    return f"{sys.executable} {script}"
