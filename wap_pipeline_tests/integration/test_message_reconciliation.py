"""Issue 19 item 4: accounting from the pipeline's own records, without the sender's ledger.

The forwarder's receipts say what Firehose accepted; raw says what landed; standardized and the
quarantine say what became of it. `status --check` holds them against each other per message id
when no ledger exists, and the `messages_reconciled` check names what does not add up -- and the
alerts sensor publishes its failure.
"""

import json
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.ingest.receipts import ForwardReceipt, receipt_log
from wap_pipeline.state import wipe_sent_ledger
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import check_evaluations, land_file, send, send_raw
from wap_pipeline_tests.integration.test_alerts import _delivered

pytestmark = pytest.mark.integration

NO_GRACE = {"WAP_RECONCILE_AFTER_MINUTES": "0"}


def test_every_message_is_accounted_for_from_the_pipelines_records_alone(stack):
    events = make_events(24, seed=101)
    bad = events[5]
    bad["currency"] = "eur"
    sent = send(stack, events)
    send_raw(stack, ['{"event_id": "x", '])  # malformed: rejected three times, then the DLQ
    assert drive(env=NO_GRACE).failed
    patcher("quarantine", "add", bad["event_id"], "--reason", "lower-case currency")
    patcher("resume-pipeline", "--pipeline", "standard_ingest", "--reason", "bad record quarantined")
    assert not drive(env=NO_GRACE).failed

    (dead,) = json.loads(patcher("--json", "dlq", "list", "--why").stdout)
    assert dead["rejected_for"] and "JSON" in dead["rejected_for"], dead

    wipe_sent_ledger(stack)
    status = json.loads(run_cli("status", "--json", "--check").stdout)
    assert status["sent_ledger"] is False and status["identity_holds"]
    messages = status["messages"]
    assert (messages["forwarded"], messages["landed"], messages["published"], messages["masked"]) == (
        24,
        24,
        23,
        1,
    )
    assert messages["rejected"] == 1 and status["dlq_depth"] == 1 and messages["holds"]
    assert set(sent) <= set(_forwarded_ids(stack))
    assert check_evaluations(["raw", "events"], "messages_reconciled")[0].passed is True


def test_a_row_nobody_forwarded_and_a_forwarded_message_that_never_landed_are_named_and_announced(stack):
    events = make_events(6, seed=102)
    send(stack, events)
    assert not drive(env=NO_GRACE).failed
    assert check_evaluations(["raw", "events"], "messages_reconciled")[0].passed is True
    _delivered(stack)  # nothing else is under test here

    # A file written to the landing prefix behind the forwarder's back (it has no receipt) ...
    _, (stray,) = land_file(stack, [orjson.dumps(make_events(1, seed=103)[0]).decode()], forwarded=False)
    # ... and a message Firehose accepted that never landed (the forwarder's receipt says it did).
    lost = str(uuid.uuid4())
    receipt_log(aws.client("s3", stack), stack).write(ForwardReceipt(datetime.now(UTC), {lost: lost}))
    assert not drive(env=NO_GRACE).failed

    evaluation = check_evaluations(["raw", "events"], "messages_reconciled")[0]
    assert evaluation.passed is False
    assert evaluation.metadata["sample_not_forwarded"].value == [stray]
    assert evaluation.metadata["sample_not_landed"].value == [lost]
    subjects = [m["Subject"] for m in _delivered(stack)]
    assert subjects == ["[wap] reconciliation failed: messages_reconciled"]

    wipe_sent_ledger(stack)
    failed = run_cli("status", "--json", "--check", check=False)
    assert failed.returncode == 2
    assert json.loads(failed.stdout)["messages"]["sample_not_landed"] == [lost]


def _receipt_keys(stack) -> list[str]:
    s3 = aws.client("s3", stack)
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=stack.landing_bucket, Prefix=stack.forward_receipts_prefix
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _receipt_of(stack, key: str) -> dict[str, str]:
    body = aws.client("s3", stack).get_object(Bucket=stack.landing_bucket, Key=key)["Body"].read()
    return ForwardReceipt.from_json(body).forwarded


def _forwarded_ids(stack) -> list[str]:
    return [m for key in _receipt_keys(stack) for m in _receipt_of(stack, key)]
