"""Clients come from one shared session: a session per client reloaded the service models from disk
(about 0.1-0.25 s per client), which every sensor tick and pipeline step paid several times. Errors
botocore may still be failing with after its retry budget are told apart from refusals."""

import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from wap_pipeline import aws
from wap_pipeline.ingest.producer import patiently
from wap_pipeline.settings import Settings


def test_each_call_is_a_new_client_from_one_shared_session():
    settings = Settings(local_port=1)
    first, second = aws.client("sqs", settings), aws.client("sqs", settings)
    assert first is not second, "each caller gets its own client (and its own retry quota)"
    assert first._loader is second._loader, "the service models are loaded once per process"
    assert first.meta.config.retries == {"mode": "standard", "total_max_attempts": settings.aws_max_attempts}


def test_items_are_marshalled_as_the_tables_already_hold_them():
    """boto3's serializer writes what the hand-written marshalling wrote, so existing items stay readable."""
    values = {"pipeline": "standard_ingest", "reason": "", "version": 3}
    item = {"pipeline": {"S": "standard_ingest"}, "reason": {"S": ""}, "version": {"N": "3"}}
    assert aws.to_item(values) == item
    assert aws.from_item(item) == values
    assert type(aws.from_item(item)["version"]) is int


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Call")


def test_throttling_server_errors_and_dropped_connections_are_transient_a_refusal_is_not():
    assert aws.is_transient(_client_error("RequestThrottled", 400))
    assert aws.is_transient(_client_error("ThrottlingException", 400))
    assert aws.is_transient(_client_error("SlowDown", 503))
    assert aws.is_transient(_client_error("Anything", 500))
    assert aws.is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert aws.is_transient(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert not aws.is_transient(_client_error("AccessDenied", 403))
    assert not aws.is_transient(_client_error("InvalidMessageContents", 400))
    assert not aws.is_transient(ValueError("not an AWS error"))


def _answering(*answers):
    """A call that raises or returns each of ``answers`` in turn."""
    remaining = iter(answers)

    def call():
        answer = next(remaining)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return call


def test_the_producer_waits_out_transient_errors_but_not_a_refusal_nor_past_its_patience():
    throttled = _client_error("RequestThrottled", 400)
    assert patiently(_answering(throttled, throttled, "sent"), patience_s=10) == "sent"
    with pytest.raises(ClientError, match="AccessDenied"):
        patiently(_answering(_client_error("AccessDenied", 403), "never"), patience_s=10)
    started = time.monotonic()
    with pytest.raises(ClientError, match="RequestThrottled"):
        patiently(_answering(*[throttled] * 10), patience_s=1)
    assert time.monotonic() - started < 2
