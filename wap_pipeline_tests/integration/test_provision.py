import json

import pytest

from wap_pipeline import aws
from wap_pipeline.provision import provision

pytestmark = pytest.mark.integration


def test_provisioning_is_idempotent_and_wires_the_dlq(stack):
    first = provision(stack)
    assert provision(stack) == first
    sqs = aws.client("sqs", stack)
    source = sqs.get_queue_attributes(QueueUrl=first["queue"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=first["dlq"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(source["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3
    assert int(dlq["MessageRetentionPeriod"]) > int(source["MessageRetentionPeriod"])
    assert int(source["VisibilityTimeout"]) == stack.visibility_timeout_s
    stream = aws.client("firehose", stack).describe_delivery_stream(DeliveryStreamName=stack.stream_name)
    destination = stream["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert destination["BucketARN"] == f"arn:aws:s3:::{stack.landing_bucket}"
    assert destination["Prefix"] == stack.landing_prefix
    tables = aws.client("dynamodb", stack).list_tables()["TableNames"]
    assert {stack.breaker_table, stack.quarantine_table, stack.writer_lease_table} <= set(tables)
