"""The SQS calls every consumer here makes the same way: receive with all attributes, delete by
receipt handle in batches of ten, and read a queue's depth."""

from __future__ import annotations


def receive(sqs, queue_url: str, wait_s: int = 0, visibility_timeout_s: int | None = None) -> list[dict]:
    """Up to 10 messages, with their system attributes (receive count, sent time) and message attributes."""
    kwargs: dict = {}
    if visibility_timeout_s is not None:
        kwargs["VisibilityTimeout"] = visibility_timeout_s
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_s,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
        **kwargs,
    )
    return response.get("Messages", [])


def delete(sqs, queue_url: str, receipt_handles: list[str]) -> tuple[int, list[dict]]:
    """Delete by receipt handle; returns (deleted count, the entries SQS reported as failed)."""
    deleted, failed = 0, []
    for start in range(0, len(receipt_handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles[start : start + 10])
        ]
        response = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        deleted += len(response.get("Successful", []))
        failed += response.get("Failed", [])
    return deleted, failed


def depth(sqs, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue: SQS's approximate counts, read in one call."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def release(sqs, queue_url: str, receipt_handles: list[str], visibility_timeout_s: int) -> int:
    """Give received messages back, visible again in ``visibility_timeout_s``; returns how many SQS took
    back (a message whose visibility already ran out is visible anyway: its failure is ignored)."""
    released = 0
    for start in range(0, len(receipt_handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": visibility_timeout_s}
            for i, h in enumerate(receipt_handles[start : start + 10])
        ]
        response = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        released += len(response.get("Successful", []))
    return released
