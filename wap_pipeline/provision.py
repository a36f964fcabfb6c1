"""Idempotent provisioning of the AWS resources the pipeline needs.

Safe to run any number of times, locally or against AWS: each resource is created when missing and
left alone when present (queue attributes are re-applied so a changed setting takes effect).
"""

from __future__ import annotations

import json

from botocore.exceptions import ClientError

from wap_pipeline import aws
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import create_tables
from wap_pipeline.settings import Settings


def queue_url(sqs, name: str) -> str:
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def _ensure_queue(sqs, name: str, attributes: dict[str, str]) -> str:
    try:
        url = queue_url(sqs, name)
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _ensure_bucket(s3, name: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=name)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})


def _ensure_table(dynamodb, name: str, key: str) -> None:
    try:
        dynamodb.describe_table(TableName=name)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=name)


def _ensure_delivery_stream(firehose, settings: Settings) -> None:
    try:
        firehose.describe_delivery_stream(DeliveryStreamName=settings.stream_name)
        return
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    firehose.create_delivery_stream(
        DeliveryStreamName=settings.stream_name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": settings.firehose_role_arn,
            "BucketARN": f"arn:aws:s3:::{settings.landing_bucket}",
            "Prefix": settings.landing_prefix,
            "ErrorOutputPrefix": settings.firehose_errors_prefix,
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
            "CompressionFormat": "UNCOMPRESSED",
        },
    )


def _ensure_landing_notifications(s3, sqs, settings: Settings) -> str:
    """S3 announces every object created under the landing prefix on the landing-events queue (the
    configuration replaces the bucket's: this project owns the landing bucket). On AWS the queue's
    policy must also let S3 send to it (docs/deploy.md)."""
    url = _ensure_queue(sqs, settings.landing_events_queue, {"VisibilityTimeout": "60"})
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=settings.landing_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "landed-files",
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": settings.landing_prefix}]}
                    },
                }
            ]
        },
    )
    return url


def alerts_local_queue(settings: Settings) -> str:
    """The queue subscribed to the alerts topic in the local profile (on AWS: email, chat; docs/deploy.md)."""
    return f"{settings.alerts_topic}-local"


def _ensure_alerts_topic(sns, sqs, settings: Settings) -> str:
    """The alerts topic (CreateTopic is idempotent); locally, an SQS queue subscribed to it."""
    topic_arn = sns.create_topic(Name=settings.alerts_topic)["TopicArn"]
    if settings.is_local:
        url = _ensure_queue(sqs, alerts_local_queue(settings), {})
        queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        subscribed = {
            s["Endpoint"]
            for s in sns.list_subscriptions_by_topic(TopicArn=topic_arn).get("Subscriptions", [])
        }
        if queue_arn not in subscribed:
            sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return topic_arn


def provision(settings: Settings) -> dict[str, str]:
    """Create (or confirm) every resource; returns what exists, by role."""
    sqs = aws.client("sqs", settings)
    dlq_url = _ensure_queue(sqs, settings.dlq_name, {"MessageRetentionPeriod": str(settings.dlq_retention_s)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    source_url = _ensure_queue(
        sqs,
        settings.queue_name,
        {
            "VisibilityTimeout": str(settings.visibility_timeout_s),
            "MessageRetentionPeriod": str(settings.queue_retention_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
            ),
        },
    )
    s3 = aws.client("s3", settings)
    for bucket in (settings.landing_bucket, settings.warehouse_bucket):
        _ensure_bucket(s3, bucket, settings.region)
    events_url = _ensure_landing_notifications(s3, sqs, settings)
    _ensure_delivery_stream(aws.client("firehose", settings), settings)
    dynamodb = aws.client("dynamodb", settings)
    _ensure_table(dynamodb, settings.breaker_table, "pipeline")
    _ensure_table(dynamodb, settings.quarantine_table, "record_id")
    _ensure_table(dynamodb, settings.audit_table, "entry_id")
    _ensure_table(dynamodb, settings.replay_grants_table, "token")
    topic_arn = _ensure_alerts_topic(aws.client("sns", settings), sqs, settings)
    _ensure_table(dynamodb, settings.writer_lease_table, "resource")
    tables = create_tables(load_wap_catalog(settings))
    return {
        "queue": source_url,
        "dlq": dlq_url,
        "landing_events": events_url,
        "stream": settings.stream_name,
        "landing": f"s3://{settings.landing_bucket}/{settings.landing_prefix}",
        "warehouse": f"s3://{settings.warehouse_bucket}/",
        "breaker_table": settings.breaker_table,
        "quarantine_table": settings.quarantine_table,
        "audit_table": settings.audit_table,
        "replay_grants_table": settings.replay_grants_table,
        "alerts_topic": topic_arn,
        "writer_lease_table": settings.writer_lease_table,
        **{f"{layer}_table": ".".join(table.name()) for layer, table in tables.items()},
    }
