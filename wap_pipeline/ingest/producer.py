"""Send events to the ingest queue (the demo's and tests' producer)."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from wap_pipeline.ingest import sqs as sqs_calls


def send_bodies(sqs, queue_url: str, bodies: list[str], attributes: list[dict] | None = None) -> list[str]:
    """Send raw bodies in batches of 10; returns the message ids. Raises if SQS refused any."""
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
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SQS refused {len(response['Failed'])} message(s): {response['Failed'][0]}")
        by_id = {item["Id"]: item["MessageId"] for item in response["Successful"]}
        message_ids.extend(by_id[str(i)] for i in range(len(entries)))
    return message_ids


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
        while max_depth is not None and sqs_calls.depth(sqs, queue_url)[0] > max_depth:
            time.sleep(poll_s)
        size = min(wave_size, total - sent)
        send_events(sqs, queue_url, make_wave(wave, size))
        on_sent(size)
        sent += size
        wave += 1
    return sent
