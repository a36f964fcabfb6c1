"""Every AWS action a ``data-patcher`` verb calls, on which resource: what the patcher role needs.

``docs/iam/patcher-policy.json`` must allow each of them (``wap_pipeline_tests/unit/test_iam_policy.py``),
and the integration tests record the calls the verbs really make (``WAP_AWS_CALL_LOG``, collected by
:func:`record_calls`, which the tests' hooks plugin registers on every client the product makes) and
fail on any call not listed here. A test module: the product never reads it.

Not listed: what ``resume-pipeline`` does after the breaker reset. Its headless re-drive runs the
pipeline itself in-process, with the pipeline's own permissions (SQS ingest, Firehose, the landing
and warehouse buckets, the catalog) -- see docs/iam/README.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from wap_pipeline.settings import Settings

# (IAM action, resource ARN pattern). {region} and {account} are the deployment's; the rest is settings.
PATCHER_PERMISSIONS: tuple[tuple[str, str], ...] = (
    # inspect / secure-clean: read landing files; write cleaned copies under the patches prefix
    ("s3:GetObject", "arn:aws:s3:::{landing_bucket}/*"),
    ("s3:PutObject", "arn:aws:s3:::{landing_bucket}/{patches_prefix}*"),
    ("s3:AbortMultipartUpload", "arn:aws:s3:::{landing_bucket}/{patches_prefix}*"),
    # firehose-errors list | reingest: list the error prefix; land its records, write-once, as a landing file
    ("s3:ListBucket", "arn:aws:s3:::{landing_bucket}"),
    ("s3:PutObject", "arn:aws:s3:::{landing_bucket}/{landing_prefix}reingested/*"),
    # secure-clean --re-inject-queue, dlq redrive | patch | edit, the auto-fix Lambda: send replays
    # to the ingest queue
    ("sqs:GetQueueUrl", "arn:aws:sqs:{region}:{account}:{queue_name}"),
    ("sqs:SendMessage", "arn:aws:sqs:{region}:{account}:{queue_name}"),
    # dlq list | show | purge | redrive | patch | edit; the auto-fix Lambda (its SQS event source mapping
    # polls the DLQ with the function's role: ReceiveMessage, DeleteMessage, GetQueueAttributes)
    ("sqs:GetQueueUrl", "arn:aws:sqs:{region}:{account}:{dlq_name}"),
    ("sqs:GetQueueAttributes", "arn:aws:sqs:{region}:{account}:{dlq_name}"),
    ("sqs:ReceiveMessage", "arn:aws:sqs:{region}:{account}:{dlq_name}"),
    ("sqs:ChangeMessageVisibility", "arn:aws:sqs:{region}:{account}:{dlq_name}"),
    ("sqs:DeleteMessage", "arn:aws:sqs:{region}:{account}:{dlq_name}"),
    # quarantine add | list | remove; secure-clean quarantines the originals it replaces
    ("dynamodb:PutItem", "arn:aws:dynamodb:{region}:{account}:table/{quarantine_table}"),
    ("dynamodb:DeleteItem", "arn:aws:dynamodb:{region}:{account}:table/{quarantine_table}"),
    ("dynamodb:Scan", "arn:aws:dynamodb:{region}:{account}:table/{quarantine_table}"),
    # every verb that sends replays grants each one first (a transaction of conditional puts); failures
    # reads the grants of the replays a failed batch holds, as the re-run will
    ("dynamodb:PutItem", "arn:aws:dynamodb:{region}:{account}:table/{replay_grants_table}"),
    ("dynamodb:BatchGetItem", "arn:aws:dynamodb:{region}:{account}:table/{replay_grants_table}"),
    # breaker status; resume-pipeline's reset
    ("dynamodb:GetItem", "arn:aws:dynamodb:{region}:{account}:table/{breaker_table}"),
    ("dynamodb:PutItem", "arn:aws:dynamodb:{region}:{account}:table/{breaker_table}"),
    # the operator audit log: every action appends; audit-log lists
    ("dynamodb:PutItem", "arn:aws:dynamodb:{region}:{account}:table/{audit_table}"),
    ("dynamodb:Scan", "arn:aws:dynamodb:{region}:{account}:table/{audit_table}"),
)

# API operations whose IAM action has another name.
_ACTION_OF_OPERATION = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    # IAM authorizes each action inside a transaction; the project's transactions only put
    "dynamodb:TransactWriteItems": "dynamodb:PutItem",
}


def permissions(
    settings: Settings, region: str = "{region}", account: str = "{account}"
) -> set[tuple[str, str]]:
    """The (action, resource ARN) pairs for this deployment's resource names."""
    names = {
        "landing_bucket": settings.landing_bucket,
        "patches_prefix": settings.patches_prefix,
        "landing_prefix": settings.landing_prefix,
        "queue_name": settings.queue_name,
        "dlq_name": settings.dlq_name,
        "quarantine_table": settings.quarantine_table,
        "breaker_table": settings.breaker_table,
        "audit_table": settings.audit_table,
        "replay_grants_table": settings.replay_grants_table,
        "region": region,
        "account": account,
    }
    return {(action, pattern.format(**names)) for action, pattern in PATCHER_PERMISSIONS}


def required_permission(call: dict, region: str = "{region}", account: str = "{account}") -> tuple[str, str]:
    """The (IAM action, resource ARN) one recorded API call needs (see :func:`record_calls`)."""
    service, operation = call["service"], call["operation"]
    action = _ACTION_OF_OPERATION.get(f"{service}:{operation}", f"{service}:{operation}")
    if service == "s3":
        resource = f"arn:aws:s3:::{call['bucket']}" + (f"/{call['key']}" if call.get("key") else "")
        if action == "s3:ListBucket":
            resource = f"arn:aws:s3:::{call['bucket']}"
    elif service == "sqs":
        resource = f"arn:aws:sqs:{region}:{account}:{call['queue']}"
    elif service == "dynamodb":
        resource = f"arn:aws:dynamodb:{region}:{account}:table/{call['table']}"
    elif service == "firehose":
        resource = f"arn:aws:firehose:{region}:{account}:deliverystream/{call['stream']}"
    elif service == "sns":
        resource = f"arn:aws:sns:{region}:{account}:{call['topic']}"
    else:
        resource = "*"
    return action, resource


def record_calls(client, path: str) -> None:
    """Append every API call ``client`` makes (service, operation, resource) to ``path`` as JSON lines,
    by a botocore event handler -- how the tests check the IAM policies (patcher and pipeline) against
    what the code really calls."""

    def record(model, params, **_) -> None:
        queue_url = params.get("QueueUrl") or ""
        call = {
            "service": model.service_model.endpoint_prefix,
            "operation": model.name,
            "bucket": params.get("Bucket"),
            "key": params.get("Key"),
            "queue": params.get("QueueName") or queue_url.rstrip("/").rsplit("/", 1)[-1] or None,
            "table": params.get("TableName") or _table_of_many(params),
            "stream": params.get("DeliveryStreamName"),
            "topic": (params.get("TopicArn") or "").rsplit(":", 1)[-1] or None,
        }
        with open(path, "a") as log:
            log.write(json.dumps(call) + "\n")

    client.meta.events.register("before-parameter-build", record)


def _table_of_many(params: Mapping) -> str | None:
    """The table of a BatchGetItem or TransactWriteItems call (the project's touch one table each)."""
    tables = set(params.get("RequestItems") or ())
    for item in params.get("TransactItems") or ():
        tables.update(action["TableName"] for action in item.values())
    return ",".join(sorted(tables)) or None
