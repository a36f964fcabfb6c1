"""Firehose batching and partial-failure resends (pure logic; a scripted stand-in for the client)."""

import pytest

from wap_pipeline.ingest.forwarder import (
    FIREHOSE_MAX_BATCH_BYTES,
    FIREHOSE_MAX_RECORDS,
    PartialFailureError,
    _chunks,
    put_all,
)


class ScriptedFirehose:
    """Refuses the records listed for each call, in order; records every call it gets."""

    def __init__(self, refusals: list[set[int]]):
        self.refusals = refusals
        self.calls: list[list[bytes]] = []

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict]) -> dict:  # noqa: N803
        self.calls.append([r["Data"] for r in Records])
        refused = self.refusals.pop(0) if self.refusals else set()
        responses = [
            {"ErrorCode": "ServiceUnavailableException"} if i in refused else {"RecordId": str(i)}
            for i in range(len(Records))
        ]
        return {"FailedPutCount": len(refused), "RequestResponses": responses}


def records(n: int, size: int = 10) -> list[tuple[str, bytes]]:
    return [(f"rh-{i}", f"{i:0{size}d}".encode()) for i in range(n)]


def test_batches_respect_the_record_and_byte_limits():
    assert [len(c) for c in _chunks(records(1201))] == [FIREHOSE_MAX_RECORDS, FIREHOSE_MAX_RECORDS, 201]
    big = records(10, size=900 * 1024)
    chunks = _chunks(big)
    assert all(sum(len(d) for _, d in c) <= FIREHOSE_MAX_BATCH_BYTES for c in chunks)
    assert sum(len(c) for c in chunks) == 10


def test_only_refused_records_are_resent_until_all_are_accepted():
    firehose = ScriptedFirehose([{1, 3}, {0}])
    resent = put_all(firehose, "s", records(5), sleep=lambda s: None)
    assert resent == 3
    assert firehose.calls[1] == [b"0000000001", b"0000000003"]
    assert firehose.calls[2] == [b"0000000001"]
    assert len(firehose.calls) == 3


def test_gives_up_with_a_clear_error_when_records_keep_being_refused():
    firehose = ScriptedFirehose([{0}] * 20)
    with pytest.raises(PartialFailureError, match="still refused by Firehose after 3 resends"):
        put_all(firehose, "s", records(2), max_resends=3, sleep=lambda s: None)
