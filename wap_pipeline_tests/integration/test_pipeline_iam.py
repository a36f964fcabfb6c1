"""docs/iam/pipeline-policy.json allows every AWS call the pipeline really makes: sensors, runs and the
operations job, recorded over the wire (WAP_AWS_CALL_LOG) while the pipeline drains good and malformed
messages."""

import json
from pathlib import Path

import orjson
import pytest

from wap_pipeline.events import make_events
from wap_pipeline_tests.iam import allowed
from wap_pipeline_tests.integration.cli import run_cli
from wap_pipeline_tests.integration.helpers import send, send_raw
from wap_pipeline_tests.permissions import required_permission

pytestmark = pytest.mark.integration

POLICY = Path(__file__).resolve().parents[2] / "docs" / "iam" / "pipeline-policy.json"


def test_the_pipeline_role_covers_every_call_the_pipeline_makes(stack, tmp_path):
    send(stack, make_events(20, seed=401))
    send_raw(stack, ['{"truncated": '])
    log = tmp_path / "calls.jsonl"
    run_cli("run", "--until-idle", env={"WAP_AWS_CALL_LOG": str(log)})

    calls = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    needed = {required_permission(call) for call in calls}
    services = {action.split(":")[0] for action, _ in needed}
    assert {"sqs", "firehose", "s3", "dynamodb"} <= services, services
    policy = json.loads(POLICY.read_text())
    missing = sorted(p for p in needed if not allowed(policy, *p))
    assert missing == [], f"the pipeline calls what docs/iam/pipeline-policy.json does not allow: {missing}"
    # And the check can fail: without Firehose the same calls are refused.
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "ForwardToFirehose"]
    assert any(not allowed(policy, *p) for p in needed)
