"""Issue 19: records in Firehose's error output are detected by a check and re-ingested exactly once."""

import base64
import json
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.ingest import firehose_errors
from wap_pipeline.ingest.receipts import ForwardReceipt, receipt_log
from wap_pipeline.rules.envelope import landing_line, to_landing_record
from wap_pipeline.state import record_sent
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import check_evaluations, curated_key_counts

pytestmark = pytest.mark.integration

NO_GRACE = {"WAP_RECONCILE_AFTER_MINUTES": "0"}


def _error_file(stack, events: list[dict]) -> bytes:
    """What Firehose writes under its ErrorOutputPrefix: a JSON line per record it gave up on, the
    record (a landing line) base64-encoded in rawData. The forwarder had put them: its receipt says so."""
    now = datetime.now(UTC)
    message_ids = [str(uuid.uuid4()) for _ in events]
    receipt_log(aws.client("s3", stack), stack).write(ForwardReceipt(now, {m: m for m in message_ids}))
    lines = []
    for event, message_id in zip(events, message_ids, strict=True):
        record = landing_line(
            to_landing_record(
                {
                    "MessageId": message_id,
                    "Body": orjson.dumps(event).decode(),
                    "Attributes": {
                        "SentTimestamp": str(int(now.timestamp() * 1000)),
                        "ApproximateReceiveCount": "1",
                    },
                }
            )
        )
        lines.append(
            json.dumps(
                {
                    "attemptsMade": 4,
                    "arrivalTimestamp": int(now.timestamp() * 1000),
                    "errorCode": "S3.AccessDenied",
                    "errorMessage": "Access was denied.",
                    "rawData": base64.b64encode(record).decode(),
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def test_firehose_error_output_is_flagged_then_reingested_exactly_once(stack):
    events = make_events(12, seed=81)
    key = f"{stack.firehose_errors_prefix}failed/{datetime.now(UTC):%Y/%m/%d/%H}/ingest-events-stream-1-x"
    aws.client("s3", stack).put_object(Bucket=stack.landing_bucket, Key=key, Body=_error_file(stack, events))
    record_sent(stack, len(events))

    assert not drive(env=NO_GRACE).failed
    evaluation = check_evaluations(["raw", "events"], "firehose_error_output_reingested")[0]
    assert evaluation.passed is False and evaluation.metadata["sample_keys"].value == [key]
    # The forwarder's receipts know these messages were accepted: the message reconciliation misses them.
    unlanded = check_evaluations(["raw", "events"], "messages_reconciled")[0]
    assert unlanded.passed is False and unlanded.metadata["not_landed"].value == len(events)
    assert curated_key_counts(stack) == {}
    listed = patcher("--json", "firehose-errors", "list", check=False)
    assert listed.returncode == 1 and [p["key"] for p in json.loads(listed.stdout)["pending"]] == [key]

    reingested = json.loads(patcher("--json", "firehose-errors", "reingest", "--reason", "S3 outage").stdout)
    assert list(reingested["landed"]) == [key] and reingested["landed"][key]
    again = json.loads(patcher("--json", "firehose-errors", "reingest").stdout)
    assert again["pending"] == [] and again["landed"] == {}, "nothing is re-ingested twice"
    # Two operators at once: the landing key is written once, the second put is refused by S3.
    assert firehose_errors.reingest(aws.client("s3", stack), stack, key) is None

    assert not drive(env=NO_GRACE).failed
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    assert check_evaluations(["raw", "events"], "firehose_error_output_reingested")[0].passed is True
    assert check_evaluations(["raw", "events"], "messages_reconciled")[0].passed is True
    run_cli("status", "--check")
