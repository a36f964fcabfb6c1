"""Send events to the ingest queue (the demo's and tests' producer)."""

from __future__ import annotations

import orjson


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
