"""The product's extension points are no-ops; failpoints and the AWS call log come from the tests' plugin."""

import sys
import types
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.stub import Stubber

from wap_pipeline import hooks
from wap_pipeline_tests import failpoints
from wap_pipeline_tests import hooks as test_hooks

PRODUCT = Path(hooks.__file__).resolve().parent


def test_the_product_reads_no_test_setting_and_imports_no_test_code():
    for path in sorted(PRODUCT.rglob("*.py")):
        text = path.read_text()
        for word in (
            "WAP_FAULTS",
            "WAP_AWS_CALL_LOG",
            "import wap_pipeline_tests",
            "from wap_pipeline_tests",
        ):
            assert word not in text, f"{path.relative_to(PRODUCT.parent)} mentions {word}"


def test_without_a_plugin_a_point_does_nothing_whatever_wap_faults_says(monkeypatch):
    monkeypatch.setenv("WAP_FAULTS", "standardized.after_audit=raise*")
    default = hooks.load("")
    assert type(default) is hooks.Hooks
    default.point("standardized.after_audit")
    default.client_created("sqs", object())


def test_the_tests_plugin_arms_the_failpoints_wap_faults_names(monkeypatch):
    plugin = hooks.load(test_hooks.MODULE)
    failpoints.reset()
    monkeypatch.setenv("WAP_FAULTS", "curated.before_commit=raise,raw.after_append=raise*")
    plugin.point("standardized.after_audit")  # not named: nothing
    with pytest.raises(failpoints.InjectedFault):
        plugin.point("curated.before_commit")
    plugin.point("curated.before_commit")  # once per process
    for _ in range(2):
        with pytest.raises(failpoints.InjectedFault):
            plugin.point("raw.after_append")  # `*`: every time
    failpoints.reset()


def test_the_tests_plugin_records_every_call_of_a_client_made_while_the_log_is_set(monkeypatch, tmp_path):
    plugin = hooks.load(test_hooks.MODULE)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("WAP_AWS_CALL_LOG", str(log))
    sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    plugin.client_created("sqs", sqs)
    with Stubber(sqs) as stub:
        stub.add_response("get_queue_url", {"QueueUrl": "https://sqs/123/ingest-events"})
        sqs.get_queue_url(QueueName="ingest-events")
    calls = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [(c["service"], c["operation"], c["queue"]) for c in calls] == [
        ("sqs", "GetQueueUrl", "ingest-events")
    ]


def test_a_plugin_must_return_hooks(monkeypatch):
    monkeypatch.setitem(sys.modules, "not_a_plugin", types.SimpleNamespace(hooks=lambda: object()))
    with pytest.raises(TypeError, match="not wap_pipeline.hooks.Hooks"):
        hooks.load("not_a_plugin")
