"""boto3 clients built from settings; the retry policy lives here and nowhere else.

botocore's ``standard`` retry mode retries throttling (429, ThrottlingException, ...) and transient
5xx errors with exponential backoff and jitter. Firehose partial failures are not retried by
botocore; :mod:`wap_pipeline.ingest.forwarder` resends those records itself.

Every call returns a new client (its own retry quota), but all clients come from one shared session:
a new session per client reloads the service models from disk, about 0.1-0.25 s per client here --
which every sensor tick and step paid several times. Sessions are not thread-safe, so creating a
client holds a lock; the clients themselves are.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from wap_pipeline import hooks
from wap_pipeline.settings import LOCAL_CREDENTIALS, Settings

_session: boto3.session.Session | None = None
_session_lock = threading.Lock()
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def client_config(settings: Settings) -> Config:
    return Config(
        region_name=settings.region,
        retries={"mode": "standard", "total_max_attempts": settings.aws_max_attempts},
        connect_timeout=5,
        read_timeout=30,
    )


def client(service: str, settings: Settings | None = None):
    """A boto3 client for ``service``: local server in the local profile, standard chain otherwise."""
    global _session
    settings = settings or Settings.from_env()
    kwargs: dict[str, object] = {"config": client_config(settings)}
    if settings.is_local:
        kwargs["endpoint_url"] = settings.endpoint_url
        kwargs.update(LOCAL_CREDENTIALS)
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        made = _session.client(service, **kwargs)
    hooks.installed(settings).client_created(service, made)
    return made


def to_item(values: Mapping[str, object]) -> dict[str, dict]:
    """Plain values as a DynamoDB item (or key, or expression values), by boto3's own serializer."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def from_item(item: Mapping[str, dict]) -> dict[str, object]:
    """A DynamoDB item as plain values, by boto3's own deserializer; whole numbers come back as
    ``int`` (the deserializer gives ``Decimal``), as they were written."""
    values = {name: _deserializer.deserialize(value) for name, value in item.items()}
    return {
        name: int(value) if isinstance(value, Decimal) and value == value.to_integral_value() else value
        for name, value in values.items()
    }


def put_if_version(dynamodb, table: str, item: Mapping[str, object], key: str, read_version: int) -> bool:
    """Put ``item`` (with its ``version``) into ``table`` only if the stored item still has
    ``read_version`` -- 0 meaning that there was none (``key`` names the partition key attribute).
    False if another writer changed it since it was read: the caller reads again or gives up."""
    kwargs: dict[str, object] = {"TableName": table, "Item": to_item(item)}
    if read_version == 0:
        kwargs["ConditionExpression"] = f"attribute_not_exists({key})"
    else:
        kwargs["ConditionExpression"] = "version = :v"
        kwargs["ExpressionAttributeValues"] = to_item({":v": read_version})
    try:
        dynamodb.put_item(**kwargs)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is throttling, a server-side failure or a dropped connection -- what botocore
    retries and may still be failing after its budget: the call is worth making again later."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        return status == 429 or status >= 500 or "Throttl" in code or code in _TRANSIENT_CODES
    return isinstance(error, (BotoConnectionError, HTTPClientError))  # resets and timeouts included


_TRANSIENT_CODES = frozenset(
    {"RequestLimitExceeded", "SlowDown", "ServiceUnavailable", "InternalError", "InternalFailure"}
)
