"""The DLQ auto-fix Lambda: an SQS event source on the DLQ, an allow-listed fix policy.

For each message of the event the configured fixes (``WAP_AUTOFIX_POLICY``, names from
:data:`wap_pipeline.rules.dlq_fixes.AUTOFIXES`; default: all of them) are applied; a body they make valid
for the forwarder and the standardized audit is re-injected as a data-patcher replay and recorded in the
operator audit log under the function's own operator name (``WAP_AUTOFIX_OPERATOR``, default
``dlq-autofix``, never a person's ``WAP_OPERATOR``).
Everything else is reported in ``batchItemFailures`` (the event source mapping needs
``FunctionResponseTypes: [ReportBatchItemFailures]``), so the mapping deletes only the fixed messages and
the others stay in the DLQ for a person.

The local AWS server cannot run Lambda functions (that needs Docker), so :func:`run_once` does locally
what the event source mapping does: receive from the DLQ, invoke :func:`handler` in-process with the
real SQS event payload, delete what it did not report as failed, release the rest.
``python -m wap_pipeline.lambda_handlers.dlq_autofix`` runs it once and prints the result; a scheduled
invocation (an event without ``Records``) does the same on AWS.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import UTC, datetime

from wap_pipeline.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_OPERATOR = "dlq-autofix"


def handler(event: dict, context: object = None) -> dict:
    """Fix what the policy can; report every other message as a batch item failure. An event without
    ``Records`` (a schedule's) polls the DLQ once instead (:func:`run_once`)."""
    from wap_pipeline.ingest.dlq import from_event_record
    from wap_pipeline.operations.actions import Operator
    from wap_pipeline.operations.patching import check_queue, standardized_fields
    from wap_pipeline.rules.dlq_fixes import AUTOFIXES, FIXED, autofix_message, describe, parse_policy

    settings = Settings.from_env()
    if "Records" not in event:
        return run_once(settings)
    policy = parse_policy(os.environ.get("WAP_AUTOFIX_POLICY") or ",".join(AUTOFIXES))
    check_queue(settings, settings.queue_name)
    operator = Operator(settings, os.environ.get("WAP_AUTOFIX_OPERATOR") or DEFAULT_OPERATOR)
    fields, _ = standardized_fields(settings)
    now = datetime.now(UTC)
    reason = f"auto-fix policy {','.join(policy)}"
    failures: list[str] = []
    for record in event["Records"]:
        message = from_event_record(record)
        fix = autofix_message(message, policy, fields, now, settings.payload_limits)
        log.info("%s", describe(fix))
        if fix.status != FIXED:
            failures.append(message.message_id)
            continue
        patch_id = f"autofix-{uuid.uuid4().hex[:12]}"
        try:
            operator.dlq_replace("dlq.autofix", [fix], [], reason, patch_id, delete_from_dlq=False)
        except Exception:  # the message stays in the DLQ; the next delivery tries again
            log.exception("could not re-inject %s", message.message_id)
            failures.append(message.message_id)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}


def sqs_event(messages: list[dict], queue_arn: str, region: str) -> dict:
    """The event Lambda's SQS event source mapping passes for messages received from ``queue_arn``."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m.get("Body", ""),
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value.get("DataType", "String"),
                    }
                    for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def run_once(settings: Settings, visibility_timeout_s: int = 60) -> dict:
    """One poll of the event source mapping, here: receive up to 10 DLQ messages, invoke the handler,
    delete the ones it did not report as failed, make the others visible again. Returns the event's
    message ids, the handler's response and what was deleted."""
    from wap_pipeline import aws
    from wap_pipeline.ingest import dlq
    from wap_pipeline.ingest import sqs as sqs_calls
    from wap_pipeline.provision import queue_url

    sqs = aws.client("sqs", settings)
    url = queue_url(sqs, settings.dlq_name)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    event = sqs_event(
        sqs_calls.receive(sqs, url, visibility_timeout_s=visibility_timeout_s), arn, settings.region
    )
    if not event["Records"]:
        return {"messages": [], "response": {"batchItemFailures": []}, "deleted": []}
    response = handler(event, None)
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    received = [dlq.from_event_record(record) for record in event["Records"]]
    done = [m for m in received if m.message_id not in failed]
    dlq.delete(sqs, url, done)
    dlq.release(sqs, url, [m for m in received if m.message_id in failed])
    return {
        "messages": [m.message_id for m in received],
        "response": response,
        "deleted": [m.message_id for m in done],
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run_once(Settings.from_env()), indent=2))
