"""docs/iam/patcher-policy.json allows every AWS action data-patcher calls -- and nothing more."""

import json
from fnmatch import fnmatchcase
from pathlib import Path

from wap_pipeline.settings import Settings
from wap_pipeline_tests.iam import allowed, statements, uncovered
from wap_pipeline_tests.permissions import permissions

POLICY = Path(__file__).resolve().parents[2] / "docs" / "iam" / "patcher-policy.json"
EXTRAS: set[tuple[str, str]] = set()


def test_the_policy_covers_every_action_the_patcher_calls():
    policy = json.loads(POLICY.read_text())
    needed = permissions(Settings())
    assert uncovered(policy, needed) == []
    # ... and the check can fail: without the re-inject statement, SendMessage is uncovered.
    trimmed = {
        **policy,
        "Statement": [s for s in policy["Statement"] if s["Sid"] != "ReInjectToTheIngestQueue"],
    }
    assert ("sqs:SendMessage", "arn:aws:sqs:{region}:{account}:ingest-events") in uncovered(trimmed, needed)


def test_the_policy_grants_nothing_the_patcher_does_not_call():
    needed = permissions(Settings())
    for effect, actions, resources in statements(json.loads(POLICY.read_text())):
        if effect != "Allow":
            continue
        for action in actions:
            for resource in resources:
                assert "*" not in action, f"wildcard action {action}"
                granted = (action, resource) in EXTRAS or any(
                    action == a and (resource == r or fnmatchcase(r, resource)) for a, r in needed
                )
                assert granted, f"{action} on {resource} is allowed but no verb needs it"


def test_the_audit_log_cannot_be_rewritten():
    policy = json.loads(POLICY.read_text())
    table = "arn:aws:dynamodb:{region}:{account}:table/wap-operator-audit"
    assert allowed(policy, "dynamodb:PutItem", table)
    assert not allowed(policy, "dynamodb:DeleteItem", table) and not allowed(
        policy, "dynamodb:UpdateItem", table
    )


def test_only_the_patcher_role_can_grant_replays():
    """A replay bypasses the quarantine only with a grant: the pipeline role may read grants, never write."""
    grants = "arn:aws:dynamodb:{region}:{account}:table/wap-replay-grants"
    patcher = json.loads(POLICY.read_text())
    pipeline = json.loads((POLICY.parent / "pipeline-policy.json").read_text())
    assert allowed(patcher, "dynamodb:PutItem", grants)
    assert not allowed(patcher, "dynamodb:DeleteItem", grants) and not allowed(
        patcher, "dynamodb:UpdateItem", grants
    )
    assert allowed(pipeline, "dynamodb:BatchGetItem", grants)
    assert not any(
        allowed(pipeline, action, grants)
        for action in (
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:DeleteItem",
        )
    )
