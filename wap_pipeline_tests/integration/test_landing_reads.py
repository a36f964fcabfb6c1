"""Reading a batch's landing files with GETs in flight, against the local server."""

import time
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from wap_pipeline import aws
from wap_pipeline.ingest.landing import LandingObject, read_landed_files
from wap_pipeline.provision import provision

pytestmark = pytest.mark.integration


def _land(s3, bucket: str, count: int) -> list[LandingObject]:
    files = []
    for number in range(count):
        key = f"landing/test/file-{number:03d}"
        body = f'{{"n": {number}}}\n'.encode() * (number + 1)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        files.append(LandingObject(key, len(body), datetime.now(UTC)))
    return files


def test_files_come_back_in_manifest_order_with_their_content(stack):
    provision(stack)
    s3 = aws.client("s3", stack)
    files = _land(s3, stack.landing_bucket, 7)
    shuffled = [files[i] for i in (3, 0, 6, 1, 5, 2, 4)]

    read = list(read_landed_files(s3, stack.landing_bucket, shuffled, ahead=2))

    assert [landed.key for landed, _ in read] == [f.key for f in shuffled]
    for landed, data in read:
        number = int(landed.key[-3:])
        assert data == f'{{"n": {number}}}\n'.encode() * (number + 1)
        assert len(data) == landed.size


def test_a_missing_file_fails_the_read_at_that_file(stack):
    provision(stack)
    s3 = aws.client("s3", stack)
    files = _land(s3, stack.landing_bucket, 3)
    missing = LandingObject("landing/test/never-landed", 1, datetime.now(UTC))
    reader = read_landed_files(s3, stack.landing_bucket, [files[0], missing, files[1]], ahead=3)

    assert next(reader)[0] == files[0]
    with pytest.raises(ClientError, match="NoSuchKey"):
        next(reader)


def test_a_manifest_is_written_once_and_a_different_one_under_its_id_is_refused(stack):
    from wap_pipeline.ingest.landing import Manifest, ManifestConflictError, read_manifest, write_manifest

    s3 = aws.client("s3", stack)
    files = _land(s3, stack.landing_bucket, 3)
    manifest = Manifest("b-once", tuple(files[:2]))
    write_manifest(s3, stack.landing_bucket, stack.manifests_prefix, manifest)
    write_manifest(s3, stack.landing_bucket, stack.manifests_prefix, manifest)  # a retried write: fine
    with pytest.raises(ManifestConflictError, match="b-once"):
        write_manifest(s3, stack.landing_bucket, stack.manifests_prefix, Manifest("b-once", tuple(files[1:])))
    stored = read_manifest(s3, stack.landing_bucket, stack.manifests_prefix, "b-once")
    assert stored.keys == manifest.keys, "the first manifest stays"


class _CountingS3:
    """The real client, counting the GETs it was asked for."""

    def __init__(self, s3):
        self.s3, self.gets = s3, 0

    def get_object(self, **kwargs):
        self.gets += 1
        return self.s3.get_object(**kwargs)

    def settled(self) -> int:
        """The GETs asked for, once no new one has come for a while (they start on the pool's threads)."""
        seen, deadline = -1, time.monotonic() + 10
        while seen != self.gets and time.monotonic() < deadline:
            seen = self.gets
            time.sleep(0.3)
        return self.gets


def test_read_ahead_is_bounded_in_bytes_as_well_as_in_files(stack):
    provision(stack)
    files = _land(aws.client("s3", stack), stack.landing_bucket, 7)
    sizes = [f.size for f in files]

    counted = _CountingS3(aws.client("s3", stack))
    reader = read_landed_files(counted, stack.landing_bucket, files, ahead=4, ahead_bytes=10**9)
    next(reader)
    assert counted.settled() == 1 + 4, "by files: the caller's file and four ahead"
    reader.close()

    # Files 2 and 3 fit in the byte budget, file 4 does not: the caller's file and two ahead.
    counted = _CountingS3(aws.client("s3", stack))
    reader = read_landed_files(counted, stack.landing_bucket, files, ahead=4, ahead_bytes=sizes[1] + sizes[2])
    next(reader)
    assert counted.settled() == 1 + 2
    assert [landed.key for landed, _ in reader] == [f.key for f in files[1:]], "and every file still comes"

    # A file larger than the budget is still read (one at a time).
    counted = _CountingS3(aws.client("s3", stack))
    assert len(list(read_landed_files(counted, stack.landing_bucket, files, ahead=4, ahead_bytes=1))) == 7
    assert counted.gets == 7
