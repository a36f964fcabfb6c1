"""Issue 19: a breaker trip reaches the alerts topic (locally: its subscribed SQS queue), once."""

import json

import pytest

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.provision import alerts_local_queue, queue_url
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.helpers import breaker_state, send

pytestmark = pytest.mark.integration


def _delivered(stack) -> list[dict]:
    sqs = aws.client("sqs", stack)
    url = queue_url(sqs, alerts_local_queue(stack))
    messages = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        messages += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
    return messages


def test_a_breaker_trip_is_published_to_the_alerts_topic_once(stack):
    events = make_events(10, seed=91)
    events[4]["idempotency_key"] = None
    send(stack, events)
    assert drive().failed
    state = breaker_state(stack)
    assert state.is_red

    delivered = _delivered(stack)
    assert [m["Subject"] for m in delivered] == [f"[wap] breaker {stack.pipeline_name} RED"]
    assert state.batch_id in delivered[0]["Message"] and "idempotency_key_missing" in delivered[0]["Message"]

    drive()  # still RED: the same trip is not announced again
    assert _delivered(stack) == []
