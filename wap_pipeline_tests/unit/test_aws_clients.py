"""Clients come from one shared session: a session per client reloaded the service models from disk
(about 0.1-0.25 s per client), which every sensor tick and pipeline step paid several times."""

from wap_pipeline import aws
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
