"""FMEA 1.1: malformed payloads go to the DLQ after exactly maxReceiveCount receives; nothing else does."""

import json
import random
import re
from collections import Counter

import orjson
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, RunsFilter

from wap_pipeline.events import make_events
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import curated_key_counts, dlq_messages, send_raw, tables
from wap_pipeline_tests.malformed import MALFORMED

pytestmark = pytest.mark.integration


def rejection_log_lines() -> list[str]:
    with DagsterInstance.get() as instance:
        lines = []
        for run in instance.get_runs(RunsFilter(job_name="ingest_sqs_to_firehose")):
            lines += [
                e.user_message for e in instance.all_logs(run.run_id) if "rejected message" in e.user_message
            ]
    return lines


def test_every_malformed_kind_ends_in_the_dlq_and_valid_neighbours_land_once(stack):
    valid = make_events(15, seed=101)
    bodies = [(kind, body) for kind, body in MALFORMED.items()] + [
        ("valid", orjson.dumps(e).decode()) for e in valid
    ]
    random.Random(5).shuffle(bodies)
    ids = send_raw(stack, [body for _, body in bodies])
    kind_of = {message_id: kind for message_id, (kind, _) in zip(ids, bodies, strict=True)}

    drive()

    in_dlq = dlq_messages(stack)
    assert Counter(kind_of[m.message_id] for m in in_dlq) == Counter(MALFORMED.keys())
    # SQS has no peek: browsing the DLQ (the operations observation, this test) counts as a receive,
    # so the DLQ's count is a lower bound here; the rejection log below proves exactly 3 source receives.
    assert min(m.receive_count for m in in_dlq) >= stack.max_receive_count
    for message in in_dlq:
        assert message.body == MALFORMED[kind_of[message.message_id]], "the DLQ keeps the body untouched"

    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in valid} and max(counts.values()) == 1
    assert tables(stack)["raw"].scan().to_arrow().num_rows == len(valid), "no malformed body was forwarded"

    # Each rejection is logged once per receive, with the message id, receive count and reason.
    logged = Counter()
    for line in rejection_log_lines():
        match = re.match(r"rejected message (\S+) \(receive (\d) of 3\): (.+?) -- left on the queue", line)
        assert match, line
        logged[(match.group(1), int(match.group(2)))] += 1
        assert match.group(3).startswith(("invalid JSON", "JSON ", "payload of"))
    malformed_ids = [m for m, kind in kind_of.items() if kind != "valid"]
    assert logged == Counter({(m, n): 1 for m in malformed_ids for n in (1, 2, 3)})

    # The DLQ is visible in Dagster: operations/dlq was observed with its depth, and its check warns.
    with DagsterInstance.get() as instance:
        (observation,) = instance.fetch_materializations(AssetKey(["operations", "dlq"]), limit=1).records
        assert observation.asset_materialization.metadata["dlq_depth"].value == len(MALFORMED)
        key = AssetCheckKey(AssetKey(["operations", "dlq"]), "dlq_depth_below_threshold")
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = check.event.dagster_event.event_specific_data
        assert evaluation.passed is False and evaluation.severity.value == "WARN"

    status = json.loads(run_cli("status", "--json", "--check").stdout)
    assert status["dlq_depth"] == len(MALFORMED)
    assert status["accounted"] == status["messages_sent"] == len(bodies)


def test_dlq_redrive_after_a_fix_keeps_the_original_message_id(stack):
    """A too-strict size limit sends a good record to the DLQ; after the fix, a redrive lands it."""
    events = make_events(6, seed=202)
    # Well-formed and valid (a 128-character account id, the longest allowed), but over a mistaken
    # 320-byte limit that the other events (about 250 bytes) fit.
    events[2]["account_id"] = "acct_" + "9" * 123
    ids = send_raw(stack, [orjson.dumps(e).decode() for e in events])
    assert not drive(env={"WAP_MAX_PAYLOAD_BYTES": "320"}).failed
    (dead,) = dlq_messages(stack)
    assert dead.message_id == ids[2]

    listed = json.loads(patcher("--json", "dlq", "list").stdout)
    assert [m["message_id"] for m in listed] == [ids[2]], "listing does not consume"
    moved = json.loads(patcher("--json", "dlq", "redrive", "--reason", "size limit fixed").stdout)
    assert [m["original_message_id"] for m in moved] == [ids[2]]
    assert dlq_messages(stack) == []
    drive()

    raw = tables(stack)["raw"].scan().to_arrow().to_pylist()
    redriven = [r for r in raw if r["original_message_id"] == ids[2]]
    assert len(redriven) == 1 and redriven[0]["message_id"] == moved[0]["new_message_id"] != ids[2]
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    (entry,) = json.loads(patcher("--json", "audit-log").stdout)
    assert (entry["action"], entry["reason"]) == ("dlq.redrive", "size limit fixed")


def test_purge_needs_confirmation_and_records_what_it_deleted(stack):
    ids = send_raw(stack, [MALFORMED["xml"], MALFORMED["bare_array"]])
    drive()
    assert len(dlq_messages(stack)) == 2
    refused = patcher("dlq", "purge", check=False)
    assert refused.returncode == 3 and len(dlq_messages(stack)) == 2
    patcher("dlq", "purge", "--message-id", ids[0], "--yes", "--reason", "garbage")
    assert [m.message_id for m in dlq_messages(stack)] == [ids[1]]
    (entry,) = json.loads(patcher("--json", "audit-log").stdout)
    assert entry["action"] == "dlq.purge" and entry["details"]["message_ids"] == [ids[0]]
