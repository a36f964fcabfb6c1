"""FMEA 1.2 and 1.3 over the wire: throttling, partial failures and an outage lose and duplicate nothing.

The pipeline talks to the local server through the project's fault proxy (AWS_ENDPOINT_URL); the test
itself reads the results directly from the server.
"""

import json
import os
import time
from collections import Counter

import orjson
import pytest
from dagster import DagsterEventType, DagsterInstance

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.ingest.forwarder_breaker import FIRST_PROBE_DELAY_S, ForwarderBreaker, forwarder_breaker
from wap_pipeline_tests.fault_proxy import FaultProxy
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import run_cli, start_cli
from wap_pipeline_tests.integration.helpers import curated_key_counts, land_file, send

pytestmark = pytest.mark.integration

# `make test` sends this many through 30 % faults; the full figure from the issue runs in `make chaos`.
FAULTED_MESSAGES = int(os.environ.get("WAP_FAULTED_MESSAGES", "300"))


@pytest.fixture
def proxy(stack):
    with FaultProxy(stack.endpoint_url) as running:
        yield running


def sent_keys(count: int, wave: int, seed: int) -> list[str]:
    keys = []
    for number, start in enumerate(range(0, count, wave)):
        keys += [e["idempotency_key"] for e in make_events(min(wave, count - start), seed=seed + number)]
    return keys


def test_thirty_percent_throttling_and_partial_failures_lose_and_duplicate_nothing(stack, proxy):
    proxy.plan.error_rate = 0.3
    proxy.plan.partial_put_rate = 0.3
    through_proxy = {"AWS_ENDPOINT_URL": proxy.endpoint}
    run_cli(
        "send", "--count", str(FAULTED_MESSAGES), "--drive", "--seed", "7", env=through_proxy, timeout=3000
    )

    assert proxy.stats.errors_injected > 50, proxy.stats
    assert proxy.stats.partial_puts > 0 and proxy.stats.records_refused > 0, proxy.stats
    status = json.loads(run_cli("status", "--json", "--check").stdout)
    assert status["curated_rows"] == status["messages_sent"] == FAULTED_MESSAGES
    counts = curated_key_counts(stack)
    assert Counter(sent_keys(FAULTED_MESSAGES, 20, 7)) == counts


def test_the_producer_waits_out_throttling_that_outlasts_botocores_budget(stack, proxy):
    """At 30 % throttling, eight throttled attempts in a row come once in ~15,000 calls -- and a
    producer polling the queue's depth makes thousands. It waits such a run out instead of dropping
    the wave it holds (the CI failure of 2026-12-06)."""
    proxy.plan.blackout(8, mode="503", services={"sqs"})
    run_cli(
        "send", "--count", "25", "--seed", "4",
        env={"AWS_ENDPOINT_URL": proxy.endpoint, "WAP_AWS_MAX_ATTEMPTS": "2"},
    )  # fmt: skip
    assert proxy.stats.blacked_out >= 4, proxy.stats  # botocore's two attempts ran out at least twice
    sqs = aws.client("sqs", stack)
    url = sqs.get_queue_url(QueueName=stack.queue_name)["QueueUrl"]
    bodies = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(message["Body"]) for message in batch]
    assert sorted(e["idempotency_key"] for e in bodies) == sorted(sent_keys(25, 20, 4))


def test_an_outage_longer_than_the_retry_budget_is_survived(stack, proxy):
    events = make_events(150, seed=55)
    send(stack, events)
    process = start_cli(
        "run",
        "--until-idle",
        env={
            "AWS_ENDPOINT_URL": proxy.endpoint,
            "WAP_AWS_MAX_ATTEMPTS": "3",  # botocore's own budget: seconds, far shorter than the blackout
            "WAP_STEP_RETRY_DELAY_S": "3",  # step retries at ~3, 6, 12, 24 s: they outlast the blackout
        },
    )
    try:
        deadline = time.monotonic() + 120
        while proxy.stats.by_service.get("firehose", 0) < 2:
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "ingest never started"
            time.sleep(0.05)
        proxy.plan.blackout(25)  # every connection is reset for 25 s
        output, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    assert proxy.stats.blacked_out > 0
    assert process.returncode == 0, output[-4000:]
    with DagsterInstance.get() as instance:
        retries = [
            event
            for run in instance.get_runs()
            for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        ]
    assert retries, "the blackout outlasted botocore's budget, so a step failed and was retried"
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    status = json.loads(run_cli("status", "--json", "--check").stdout)
    assert status["breaker"] == "GREEN" and status["dlq_depth"] == 0


def test_a_firehose_only_outage_of_two_minutes_sends_nothing_to_the_dlq(stack, proxy):
    """FMEA 1.3 with SQS up and Firehose down (issue 19): every failed forward used to spend one of the
    messages' 3 receives, so good messages reached the DLQ. The forwarder's breaker stops receiving
    until a probe finds Firehose back."""
    events = make_events(200, seed=66)
    send(stack, events)
    proxy.plan.blackout(130, mode="503", services={"firehose"})
    run_cli(
        "run",
        "--until-idle",
        "--timeout",
        "900",
        env={"AWS_ENDPOINT_URL": proxy.endpoint, "WAP_AWS_MAX_ATTEMPTS": "3"},
        timeout=1200,
    )
    assert proxy.stats.blacked_out > 0 and not proxy.plan.in_blackout()
    status = json.loads(run_cli("status", "--json", "--check").stdout)
    assert status["dlq_depth"] == 0, "an outage sent good messages to the DLQ"
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    forwarder = forwarder_breaker(aws.client("dynamodb", stack), stack).state()
    assert forwarder.status == "CLOSED" and "Firehose unavailable" in forwarder.reason and forwarder.opened_at


def test_the_forwarder_breaker_waits_probes_with_backoff_and_closes_by_itself(stack):
    now = [1_000.0]
    breaker = ForwarderBreaker(
        aws.client("dynamodb", stack), stack.breaker_table, stack.pipeline_name, clock=lambda: now[0]
    )
    assert breaker.allows_receive(probe=lambda: pytest.fail("a closed breaker does not probe"))
    opened = breaker.open("Firehose unavailable: 503")
    assert opened.is_open and opened.next_probe_at == 1_000 + FIRST_PROBE_DELAY_S

    def down() -> None:
        raise ConnectionError("still down")

    assert not breaker.allows_receive(probe=lambda: pytest.fail("no probe before its time"))
    now[0] = opened.next_probe_at
    assert not breaker.allows_receive(probe=down)
    again = breaker.state()
    assert again.failed_probes == 1 and again.next_probe_at == now[0] + 2 * FIRST_PROBE_DELAY_S
    assert again.reason == "Firehose unavailable: 503", "the reason stays what opened it"
    now[0] = again.next_probe_at
    assert breaker.allows_receive(probe=lambda: None)
    closed = breaker.state()
    assert not closed.is_open and closed.closed_at and closed.opened_at == opened.opened_at


def test_a_landing_tick_that_failed_is_not_taken_for_idle(stack, proxy):
    """S3 down for the landing sensor's first ticks, SQS up and the ingest queue empty: the file's
    announcement stays on the landing-events queue, so the runner is not idle until a tick batches it
    (it used to call a round idle when the ingest queue was empty and leave the file unprocessed)."""
    events = make_events(20, seed=77)
    land_file(stack, [orjson.dumps(e).decode() for e in events])
    proxy.plan.blackout(8, mode="503", services={"s3"})
    report = drive(env={"AWS_ENDPOINT_URL": proxy.endpoint, "WAP_AWS_MAX_ATTEMPTS": "1"})
    assert proxy.stats.blacked_out > 0 and not report.failed, report.runs
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
