"""Firehose's error output: records Firehose could not deliver, written under the error prefix.

Firehose writes a record it gave up on (after its own retries) to ``landing-errors/`` as one JSON
document per line, the record itself base64-encoded in ``rawData``. For this pipeline that record is a
landing line (the forwarder's envelope), already deleted from SQS: nothing else will ever bring it
back. Re-ingesting an error file writes its records as a landing file under a key derived from the
error file's key, with a write-once put -- so a second re-ingest (a retry, two operators) is refused by
S3 and each record lands exactly once -- and the landing sensor batches it like any landed file.
"""

from __future__ import annotations

import base64
import hashlib
import json

from botocore.exceptions import ClientError

from wap_pipeline.ingest.landing import LandingObject, list_objects
from wap_pipeline.settings import Settings


def reingested_key(settings: Settings, error_key: str) -> str:
    """Where the records of ``error_key`` land when re-ingested: one key per error file, ever."""
    digest = hashlib.sha256(error_key.encode()).hexdigest()[:32]
    return f"{settings.landing_prefix}reingested/{digest}"


def landing_lines(error_file: bytes) -> bytes:
    """The records of an error file, as landing lines (newline-terminated, as the forwarder puts them)."""
    lines = []
    for line in error_file.splitlines():
        if line.strip():
            record = base64.b64decode(json.loads(line)["rawData"])
            lines.append(record if record.endswith(b"\n") else record + b"\n")
    return b"".join(lines)


def pending(s3, settings: Settings) -> list[LandingObject]:
    """Error files whose records were not re-ingested yet, oldest first."""
    errors = list_objects(s3, settings.landing_bucket, settings.firehose_errors_prefix)
    if not errors:
        return []
    done = {o.key for o in list_objects(s3, settings.landing_bucket, f"{settings.landing_prefix}reingested/")}
    waiting = [o for o in errors if reingested_key(settings, o.key) not in done]
    return sorted(waiting, key=lambda o: (o.last_modified, o.key))


def reingest(s3, settings: Settings, error_key: str) -> str | None:
    """Land the records of ``error_key``; the landing key, or None if they were re-ingested before."""
    data = s3.get_object(Bucket=settings.landing_bucket, Key=error_key)["Body"].read()
    key = reingested_key(settings, error_key)
    try:
        s3.put_object(Bucket=settings.landing_bucket, Key=key, Body=landing_lines(data), IfNoneMatch="*")
    except ClientError as error:
        if error.response["Error"]["Code"] in ("PreconditionFailed", "412"):
            return None
        raise
    return key
