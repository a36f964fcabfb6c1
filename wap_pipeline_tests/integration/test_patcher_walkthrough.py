"""The spec's data-patcher walkthrough (FMEA section 5.2), end to end against the local server.

A batch fails its audit because one landed file has a '\\x1F' at line 1402; then, exactly as the spec
writes it: inspect -> secure-clean --re-inject-queue -> resume-pipeline. The batch publishes without
the bad copy and the cleaned replay reaches curated exactly once.
"""

import json

import orjson
import pytest
from dagster import DagsterInstance

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest.dlq import browse
from wap_pipeline.provision import queue_url
from wap_pipeline.rules.replays import body_sha256
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import (
    assert_calls_allowed,
    breaker_state,
    curated_key_counts,
    land_file,
    quarantine,
    replay_grants,
    tables,
)

pytestmark = pytest.mark.integration

LINES = 1500
BAD_LINE = 1402


def test_inspect_secure_clean_resume_as_the_spec_walks_through_it(stack, tmp_path):
    events = make_events(LINES, seed=52)
    bad = events[BAD_LINE - 1]
    bad["currency"] = "EU\x1fR"  # an encoding glitch: the audit's currency rule catches it
    key, message_ids = land_file(stack, [orjson.dumps(e).decode() for e in events])
    uri = f"s3://{stack.landing_bucket}/{key}"
    s3 = aws.client("s3", stack)
    source_etag = s3.head_object(Bucket=stack.landing_bucket, Key=key)["ETag"]
    calls = {"WAP_AWS_CALL_LOG": str(tmp_path / "aws-calls.jsonl")}

    # The batch fails its audit: nothing published, the breaker is RED.
    assert run_cli("run", "--until-idle", check=False).returncode == 1
    with DagsterInstance.get() as instance:
        (batch,) = instance.get_dynamic_partitions("landing_batches")
    assert breaker_state(stack).status == "RED"
    assert wap.published_batches(tables(stack)["standardized"]) == []

    # 1. Inspect (diagnosis).
    inspected = patcher("inspect", uri, check=False, env=calls)
    assert inspected.returncode == 1, inspected.stderr
    assert f"Found unprintable character '\\x1F' at line {BAD_LINE}, column" in inspected.stdout
    report = json.loads(patcher("--json", "inspect", uri, check=False, env=calls).stdout)
    (line,) = report["lines"]
    assert line["line"] == BAD_LINE
    assert line["ids"] == {
        "message_id": message_ids[BAD_LINE - 1],
        "original_message_id": message_ids[BAD_LINE - 1],
        "idempotency_key": bad["idempotency_key"],
        "event_id": bad["event_id"],
    }
    assert [(p["kind"], p.get("char"), p.get("rule")) for p in line["problems"]] == [
        ("unprintable", "\\x1F", None),
        ("audit", None, "currency_invalid"),
    ]
    assert report["summary"]["lines"] == LINES and report["summary"]["lines_with_problems"] == 1

    # 2. Sanitize and re-wrap: the original metadata travels with the replay.
    cleaned = patcher(
        "secure-clean", uri, "--remove-chars", "\\x1F", "--re-inject-queue", stack.queue_name, env=calls
    ).stdout
    assert "Injecting to SQS ingest-events with attributes:" in cleaned
    assert "- is_replay: true" in cleaned
    assert f"- original_message_id: {message_ids[BAD_LINE - 1]}" in cleaned
    assert f"- idempotency_key: {bad['idempotency_key']} [preserved]" in cleaned
    sqs = aws.client("sqs", stack)
    (replay,) = browse(sqs, queue_url(sqs, stack.queue_name))
    token = replay.attributes.pop("replay_token")
    assert replay.attributes == {
        "is_replay": "true",
        "original_message_id": message_ids[BAD_LINE - 1],
        "idempotency_key": bad["idempotency_key"],
    }
    assert orjson.loads(replay.body) == {**bad, "currency": "EUR"}
    # Only data-patcher's grant makes it a replay: bound to this record and this very body.
    (grant,) = replay_grants(stack).lookup([token]).values()
    assert (grant.quarantine_id, grant.body_sha256, grant.granted_by) == (
        bad["event_id"],
        body_sha256(replay.body),
        "support-bob",
    )
    # The source is untouched; the cleaned copy is under the patches prefix; the original is masked.
    assert s3.head_object(Bucket=stack.landing_bucket, Key=key)["ETag"] == source_etag
    (patch,) = s3.list_objects_v2(Bucket=stack.landing_bucket, Prefix=stack.patches_prefix)["Contents"]
    assert patch["Key"].endswith(key)
    copy = s3.get_object(Bucket=stack.landing_bucket, Key=patch["Key"])["Body"].read().split(b"\n")
    assert b"\\u001f" not in copy[BAD_LINE - 1] and len(copy) == LINES + 1
    assert quarantine(stack).ids() == frozenset({bad["event_id"]})
    log = json.loads(patcher("--json", "audit-log", env=calls).stdout)
    assert [(e["action"], e["operator"]) for e in log] == [
        ("patch.write", "support-bob"),
        ("patch.inject", "support-bob"),
        ("quarantine.add", "support-bob"),
    ]
    assert log[1]["details"]["sent"][0]["original_message_id"] == message_ids[BAD_LINE - 1]
    assert_calls_allowed(calls["WAP_AWS_CALL_LOG"], stack)  # docs/iam/patcher-policy.json covers these

    # 3. Resume: reset the breaker, re-drive the failed batch, then the replay's batch.
    resumed = patcher("resume-pipeline", "--pipeline", "standard_ingest")
    assert "Circuit Breaker Reset (Status=GREEN)" in resumed.stdout
    standardized = tables(stack)["standardized"]
    published = wap.published_batches(standardized)
    assert published[0] == batch and len(published) == 2, "the failed batch, then the replay's batch"
    assert wap.scan_batch(standardized, wap.MAIN, batch).num_rows == LINES - 1, "the bad copy is masked"
    counts = curated_key_counts(stack)
    assert set(counts) == {e["idempotency_key"] for e in events} and max(counts.values()) == 1
    curated = tables(stack)["curated"].scan().to_arrow().to_pylist()
    (row,) = [r for r in curated if r["event_id"] == bad["event_id"]]
    assert (row["currency"], row["is_replay"], row["original_message_id"]) == (
        "EUR",
        True,
        message_ids[BAD_LINE - 1],
    )
    assert breaker_state(stack).status == "GREEN"
    assert run_cli("status", "--check").returncode == 0, "every landed record is accounted for"
