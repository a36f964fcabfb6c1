"""data-patcher inspect and secure-clean over the wire: allow-lists, dry run, records left invalid."""

import json

import orjson
import pytest

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.ingest.dlq import browse
from wap_pipeline.provision import queue_url
from wap_pipeline_tests.integration.cli import patcher
from wap_pipeline_tests.integration.helpers import assert_calls_allowed, land_file, quarantine, replay_grants

pytestmark = pytest.mark.integration


def patches(settings) -> list[str]:
    listed = aws.client("s3", settings).list_objects_v2(
        Bucket=settings.landing_bucket, Prefix=settings.patches_prefix
    )
    return [o["Key"] for o in listed.get("Contents", [])]


def queued(settings, name: str) -> list:
    sqs = aws.client("sqs", settings)
    return browse(sqs, queue_url(sqs, name))


def test_inspect_reads_allow_listed_buckets_only_and_says_what_it_found(stack, tmp_path):
    events = make_events(5, seed=61)
    good_key, _ = land_file(stack, [orjson.dumps(e).decode() for e in events])
    events[3]["idempotency_key"] += "\x1f"
    bad_key, ids = land_file(stack, [orjson.dumps(e).decode() for e in events])

    calls = {"WAP_AWS_CALL_LOG": str(tmp_path / "aws-calls.jsonl")}
    clean = patcher("inspect", f"s3://{stack.landing_bucket}/{good_key}", env=calls)
    assert "no problems found" in clean.stdout
    found = patcher("--json", "inspect", f"s3://{stack.landing_bucket}/{bad_key}", check=False, env=calls)
    assert found.returncode == 1
    (report,) = json.loads(found.stdout)["lines"]
    assert report["line"] == 4 and report["ids"]["message_id"] == ids[3]
    assert {p.get("rule") for p in report["problems"]} == {None, "idempotency_key_unprintable"}

    refused = patcher("inspect", f"s3://{stack.warehouse_bucket}/{bad_key}", check=False)
    assert refused.returncode == 4 and "not allow-listed" in refused.stderr and not refused.stdout
    missing = patcher("inspect", f"s3://{stack.landing_bucket}/landing/nothing-here", check=False)
    assert missing.returncode == 3 and "no such object" in missing.stderr
    widened = {"WAP_PATCHER_ALLOWED_BUCKETS": f"{stack.landing_bucket},{stack.warehouse_bucket}"}
    assert patcher("inspect", f"s3://{stack.warehouse_bucket}/x", check=False, env=widened).returncode == 3
    assert json.loads(patcher("--json", "audit-log").stdout) == [], "inspect only reads"

    # The other verbs, for the record of their AWS calls: all within the patcher's IAM permissions.
    for verb in (
        ("quarantine", "add", "evt_1", "--reason", "r"),
        ("quarantine", "list"),
        ("quarantine", "remove", "evt_1", "--reason", "r"),
        ("breaker", "status"),
        ("dlq", "list"),
        ("dlq", "purge", "--yes"),
        ("dlq", "redrive"),
        ("audit-log",),
    ):
        patcher(*verb, env=calls)
    assert_calls_allowed(calls["WAP_AWS_CALL_LOG"], stack)


def test_secure_clean_refuses_other_queues_dry_runs_and_never_injects_an_invalid_record(stack, tmp_path):
    events = make_events(4, seed=62)
    fixable = events[1]
    dirty_key = fixable["idempotency_key"]
    fixable["idempotency_key"] = dirty_key[:4] + "\x1f" + dirty_key[4:]
    events[2]["idempotency_key"] = "\x1f"  # nothing is left once cleaned: still invalid
    key, ids = land_file(stack, [orjson.dumps(e).decode() for e in events])
    uri = f"s3://{stack.landing_bucket}/{key}"
    calls = {"WAP_AWS_CALL_LOG": str(tmp_path / "aws-calls.jsonl")}

    # Cleaning changes line 2's idempotency_key: refused unless allowed, nothing written or sent.
    refused = patcher(
        "secure-clean", uri, "--remove-chars", "\\x1F", "--re-inject-queue", stack.queue_name, check=False
    )
    assert refused.returncode == 3, refused.stderr
    assert "line 2: idempotency_key:" in refused.stderr and "--allow-key-change" in refused.stderr
    assert patches(stack) == [] and queued(stack, stack.queue_name) == []
    args = ("secure-clean", uri, "--remove-chars", "\\x1F", "--allow-key-change")

    for queue in ("production-queue", stack.dlq_name):
        refused = patcher(*args, "--re-inject-queue", queue, check=False)
        assert refused.returncode == 4 and f"queue {queue!r} is not allow-listed" in refused.stderr
    dry = patcher(*args, "--re-inject-queue", stack.queue_name, "--dry-run", check=False, env=calls)
    assert dry.returncode == 1, "a record is left invalid"
    assert "line 2 (" in dry.stdout and "would be injected" in dry.stdout
    assert "line 3 (" in dry.stdout and "still invalid after cleaning, NOT injected" in dry.stdout
    assert patches(stack) == [] and queued(stack, stack.queue_name) == []
    assert json.loads(patcher("--json", "audit-log").stdout) == []

    # Without a queue: the cleaned copy only.
    copy_only = patcher(*args, check=False, env=calls)
    assert copy_only.returncode == 1 and "Cleaned copy: s3://" in copy_only.stdout
    assert len(patches(stack)) == 1 and queued(stack, stack.queue_name) == []
    assert quarantine(stack).ids() == frozenset()
    assert_calls_allowed(calls["WAP_AWS_CALL_LOG"], stack)

    # Another queue, once allow-listed; JSON output streamed as one document.
    sqs = aws.client("sqs", stack)
    sqs.create_queue(QueueName="patch-staging")
    env = {"WAP_PATCHER_ALLOWED_QUEUES": "patch-staging"}
    result = patcher(
        "--json", *args, "--re-inject-queue", "patch-staging", "--reason", "INC-7", env=env, check=False
    )
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert [(r["line"], r["status"]) for r in document["records"]] == [(3, "invalid"), (2, "cleaned")]
    assert document["outcome"]["injected"] == 1 and document["outcome"]["summary"]["unchanged"] == 2
    (replay,) = queued(stack, "patch-staging")
    assert replay.message_id == document["records"][1]["new_message_id"]
    assert replay_grants(stack).lookup([replay.attributes.pop("replay_token")]), "granted before it was sent"
    assert replay.attributes == {
        "is_replay": "true",
        "original_message_id": ids[1],
        "idempotency_key": dirty_key,
    }
    assert orjson.loads(replay.body) == {**fixable, "idempotency_key": dirty_key}
    assert queued(stack, stack.queue_name) == [], "nothing reached the ingest queue"
    assert quarantine(stack).ids() == frozenset({fixable["event_id"]})
    log = json.loads(patcher("--json", "audit-log").stdout)
    assert [(e["action"], e["reason"]) for e in log] == [
        ("patch.write", "secure-clean"),
        ("patch.write", "INC-7"),
        ("patch.inject", "INC-7"),
        (
            "quarantine.add",
            f"INC-7: replaced by a cleaned replay (patch {document['outcome']['patch_id']}, line 2)",
        ),
    ]
