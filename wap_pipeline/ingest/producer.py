"""Send events to the ingest queue (the demo's and tests' producer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import orjson

from wap_pipeline import aws
from wap_pipeline.ingest import sqs as sqs_calls

PATIENCE_S = 300.0
"""How long the producer keeps trying a call that fails transiently after botocore's own retries."""

T = TypeVar("T")


def patiently(call: Callable[[], T], patience_s: float = PATIENCE_S) -> T:
    """``call()``, tried again with backoff while it fails transiently (:func:`aws.is_transient`), for up
    to ``patience_s``. botocore's budget is seconds; a producer that gave up then would drop the wave it
    holds, so it waits out throttling the way a real producer's outbox would."""
    deadline = time.monotonic() + patience_s
    delay = 0.5
    while True:
        try:
            return call()
        except Exception as error:
            if not aws.is_transient(error) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def send_bodies(sqs, queue_url: str, bodies: list[str], attributes: list[dict] | None = None) -> list[str]:
    """Send raw bodies in batches of 10; returns the message ids. Throttling is waited out
    (:func:`patiently`); raises if SQS refused a message for its content."""
    message_ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries = []
        for offset, body in enumerate(bodies[start : start + 10]):
            entry: dict = {"Id": str(offset), "MessageBody": body}
            if attributes is not None and attributes[start + offset]:
                entry["MessageAttributes"] = {
                    name: {"DataType": "String", "StringValue": value}
                    for name, value in attributes[start + offset].items()
                }
            entries.append(entry)
        message_ids.extend(patiently(partial(_send_batch, sqs, queue_url, entries)))
    return message_ids


def _send_batch(sqs, queue_url: str, entries: list[dict]) -> list[str]:
    """One SendMessageBatch; entries SQS failed on its own side (not the sender's fault) are sent again,
    a few times, before the batch fails."""
    sent: dict[str, str] = {}
    pending = entries
    attempt = 0
    while True:
        attempt += 1
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=pending)
        sent.update({item["Id"]: item["MessageId"] for item in response.get("Successful", [])})
        failed = response.get("Failed", [])
        if not failed:
            return [sent[entry["Id"]] for entry in entries]
        if any(item.get("SenderFault") for item in failed) or attempt == _ENTRY_ATTEMPTS:
            raise RuntimeError(f"SQS refused {len(failed)} message(s): {failed[0]}")
        pending = [entry for entry in pending if entry["Id"] not in sent]
        time.sleep(0.2 * 2**attempt)


_ENTRY_ATTEMPTS = 5


def send_events(sqs, queue_url: str, events: list[dict]) -> list[str]:
    return send_bodies(sqs, queue_url, [orjson.dumps(event).decode() for event in events])


def send_in_waves(
    sqs,
    queue_url: str,
    total: int,
    wave_size: int,
    make_wave: Callable[[int, int], list[dict]],
    on_sent: Callable[[int], None],
    max_depth: int | None = None,
    poll_s: float = 0.05,
) -> int:
    """Send ``total`` events in waves; with ``max_depth``, wait while the queue is deeper than that.

    The backpressure keeps the queue shallow while a consumer drains it -- what a real producer
    sees as SQS latency, and what the local server needs (its cost per call grows with depth).
    ``make_wave(wave_number, size)`` builds a wave; ``on_sent(size)`` is told after each one.
    """
    sent = 0
    wave = 0
    while sent < total:
        while max_depth is not None and patiently(partial(sqs_calls.depth, sqs, queue_url))[0] > max_depth:
            time.sleep(poll_s)
        size = min(wave_size, total - sent)
        send_events(sqs, queue_url, make_wave(wave, size))
        on_sent(size)
        sent += size
        wave += 1
    return sent
