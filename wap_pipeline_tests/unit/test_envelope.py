from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest

from wap_pipeline.rules.envelope import (
    Rejection,
    json_object,
    landing_line,
    raw_rows,
    split_landing_line,
    to_landing_record,
)


def message(
    body: str, attributes: dict | None = None, receive_count: int = 1, message_id: str = "m-1"
) -> dict:
    msg = {
        "MessageId": message_id,
        "ReceiptHandle": "rh",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1764345600000"},
    }
    if attributes:
        msg["MessageAttributes"] = {
            k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
        }
    return msg


def test_valid_message_becomes_landing_record_with_lineage():
    record = to_landing_record(message('{"event_id": "e1", "idempotency_key": "k1"}', receive_count=2))
    assert record == {
        "message_id": "m-1",
        "original_message_id": "m-1",
        "idempotency_key": "k1",
        "is_replay": False,
        "sent_timestamp": 1764345600000,
        "receive_count": 2,
        "body": '{"event_id": "e1", "idempotency_key": "k1"}',
    }


def test_replay_attributes_win_over_the_new_message_id():
    record = to_landing_record(
        message(
            '{"event_id": "e1"}',
            {"is_replay": "true", "original_message_id": "orig-9", "idempotency_key": "k-preserved"},
            message_id="new-1",
        )
    )
    assert record["message_id"] == "new-1"
    assert record["original_message_id"] == "orig-9"
    assert record["idempotency_key"] == "k-preserved"
    assert record["is_replay"] is True
    assert "replay_token" not in record  # a claim only: no data-patcher grant travels with it


def test_the_replay_token_travels_from_the_message_attribute_into_raw():
    attributes = {"is_replay": "true", "replay_token": "tok-1"}
    record = to_landing_record(message('{"event_id": "e1"}', attributes, message_id="new-1"))
    assert record["replay_token"] == "tok-1"
    (row,) = raw_rows(landing_line(record), "landing/x", "b1", datetime(2026, 11, 28, tzinfo=UTC))
    assert row["replay_token"] == "tok-1" and row["is_replay"] is True
    # A landing line with a token that is not a string has none.
    (row,) = raw_rows(
        b'{"body": "{}", "replay_token": 7}', "landing/x", "b1", datetime(2026, 11, 28, tzinfo=UTC)
    )
    assert row["replay_token"] is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"event_id": "e1"', "invalid JSON"),
        ("[1, 2]", "JSON list where an object was expected"),
        ("42", "JSON int where an object was expected"),
        ("", "invalid JSON"),
        ('"just a string"', "JSON str where an object was expected"),
    ],
)
def test_non_objects_are_rejected_with_a_reason(body, reason):
    result = to_landing_record(message(body, receive_count=3))
    assert isinstance(result, Rejection)
    assert result.receive_count == 3
    assert reason in result.reason


def test_landing_lines_round_trip_into_raw_rows_and_foreign_lines_are_kept():
    first = to_landing_record(message('{"event_id": "e1"}', message_id="a"))
    second = to_landing_record(message('{"event_id": "e2"}', message_id="b"))
    data = landing_line(first) + landing_line(second) + b"not an envelope\n"
    now = datetime(2026, 11, 28, tzinfo=UTC)
    rows = raw_rows(data, "landing/x", "b1", now)
    assert [r["line_number"] for r in rows] == [1, 2, 3]
    assert [r["message_id"] for r in rows] == ["a", "b", None]
    assert rows[2]["body"] == "not an envelope"
    assert rows[0]["sent_timestamp"] == datetime.fromtimestamp(1764345600, tz=UTC)
    assert orjson.loads(rows[1]["body"]) == {"event_id": "e2"}


def test_one_split_of_a_landing_line_for_the_raw_layer_inspect_and_standardize():
    envelope = {"message_id": "m1", "body": '{"event_id": "e1"}'}
    line = orjson.dumps(envelope)
    assert split_landing_line(line) == split_landing_line(line.decode()) == (envelope, envelope["body"])
    assert json_object(envelope["body"]) == {"event_id": "e1"}
    # Not an envelope: the line is its own body, so the audit flags it.
    assert split_landing_line(b'{"body": 42}') == (None, '{"body": 42}')
    assert split_landing_line(b"\xef\xbb\xbf" + line) == (None, "\ufeff" + line.decode())  # a BOM
    # The raw layer splits bytes (invalid UTF-8 is no JSON); inspect splits the text it decoded.
    assert split_landing_line(b'{"body": "\xff"}') == (None, '{"body": "\ufffd"}')
    assert split_landing_line('{"body": "\ufffd"}') == ({"body": "\ufffd"}, "\ufffd")
    assert json_object("[1]") is None and json_object("{") is None and json_object(None) is None


def _forwarded(count: int) -> bytes:
    lines = []
    for n in range(count):
        body = orjson.dumps({"event_id": f"e{n}", "idempotency_key": f"k{n}", "note": 'quote " é \\n'})
        attrs = (
            {"is_replay": "true", "original_message_id": "orig", "replay_token": f"t{n}"}
            if n % 3 == 0
            else None
        )
        lines.append(landing_line(to_landing_record(message(body.decode(), attrs, message_id=f"m{n}"))))
    return b"".join(lines)


@pytest.mark.parametrize(
    "data",
    [
        _forwarded(5),
        _forwarded(3) + b"not an envelope\n" + _forwarded(2),
        _forwarded(2) + b"\n" + _forwarded(2),  # a blank line keeps its line number
        _forwarded(2) + b'{"message_id": "x", "body": 42}\n',  # body of the wrong type
        _forwarded(2) + b'{"message_id": "x", "body": "b", "is_replay": "yes"}\n',
        _forwarded(2) + b'{"message_id": "x", "body": "b", "replay_token": ["t"]}\n',
        _forwarded(2) + b'{"message_id": "x"}\n',  # no body
        _forwarded(2) + b'{"body": "a"}{"body": "b"}\n',  # two objects on one line
        _forwarded(2).rstrip(b"\n"),  # no trailing newline
        b"\xff\xfe not utf-8\n" + _forwarded(1),
        b"",
    ],
)
def test_raw_table_gives_exactly_the_rows_of_raw_rows(data):
    from wap_pipeline.iceberg.schemas import RAW_SCHEMA
    from wap_pipeline.rules.envelope import raw_table

    schema = RAW_SCHEMA.as_arrow()
    now = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
    expected = pa.Table.from_pylist(raw_rows(data, "landing/x", "b1", now), schema=schema)
    assert raw_table(data, "landing/x", "b1", now, schema).equals(expected)


def test_forwarder_files_take_the_vectorised_path():
    from wap_pipeline.rules.envelope import _envelopes

    assert _envelopes(_forwarded(4)).num_rows == 4
    assert _envelopes(_forwarded(2) + b"garbage\n") is None
