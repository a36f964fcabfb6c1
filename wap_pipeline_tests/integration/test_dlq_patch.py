"""Fixing the DLQ (issue 21), over the wire: patch by rule, edit by hand, the auto-fix Lambda handler.

Messages with a raw tab in a string, a byte-order mark, a trailing comma, a NEL between tokens and a
truncated body are sent; the forwarder rejects them until SQS's redrive policy moves them to the DLQ.
Then ``dlq patch`` fixes the tab and the BOM, ``dlq edit`` (a scripted $EDITOR) the trailing comma, and
the auto-fix handler the NEL. The local server cannot run Lambda functions (no Docker), so the handler
is invoked in-process by ``run_once`` with the SQS event built from messages really received from the DLQ.
Every fixed message ends exactly once in curated, the truncated one stays in the DLQ, every action is in
the operator audit log.
"""

import json
from collections import Counter

import orjson
import pytest

from wap_pipeline.events import make_events
from wap_pipeline.lambda_handlers.dlq_autofix import run_once
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import (
    assert_calls_allowed,
    curated_key_counts,
    dlq_messages,
    scripted_editor,
    send_raw,
    tables,
)

pytestmark = pytest.mark.integration


def test_patch_edit_and_autofix_take_every_fixable_message_to_curated_once(stack, tmp_path, monkeypatch):
    events = make_events(8, seed=2121)
    valid, tab, bom, comma, nel, truncated = events[:3], events[3], events[4], events[5], events[6], events[7]
    tab["currency"] = "USD"
    bodies = {
        "tab": orjson.dumps(tab).decode().replace('"USD"', '"US\tD"'),
        "bom": "\ufeff" + orjson.dumps(bom).decode(),
        "comma": orjson.dumps(comma).decode()[:-1] + ",}",
        "nel": orjson.dumps(nel).decode().replace(",", ",\x85", 1),
        "truncated": orjson.dumps(truncated).decode()[:60],
    }
    send_raw(stack, [orjson.dumps(e).decode() for e in valid])
    ids = dict(zip(bodies, send_raw(stack, list(bodies.values())), strict=True))
    drive()
    assert {m.message_id for m in dlq_messages(stack)} == set(ids.values()), "the redrive policy moved them"
    calls = {"WAP_AWS_CALL_LOG": str(tmp_path / "aws-calls.jsonl")}

    # Patch by rule: a dry run changes nothing; then the tab and the BOM are fixed, the rest listed.
    patch = ("dlq", "patch", "--all", "--remove-chars", "\\t\\uFEFF")
    dry = patcher("--json", *patch, "--dry-run", check=False, env=calls)
    assert dry.returncode == 1 and json.loads(dry.stdout)["fixed"] == 2
    assert len(dlq_messages(stack)) == len(bodies)
    patched = patcher("--json", *patch, "--reason", "tab and BOM", check=False, env=calls)
    assert patched.returncode == 1, patched.stderr
    outcome = json.loads(patched.stdout)
    status = {m["message_id"]: m for m in outcome["messages"]}
    assert {i for i, m in status.items() if m["status"] == "fixed"} == {ids["tab"], ids["bom"]}
    assert status[ids["tab"]]["attributes"] == {
        "is_replay": "true",
        "original_message_id": ids["tab"],
        "idempotency_key": tab["idempotency_key"],
    }
    assert "invalid JSON" in " ".join(status[ids["truncated"]]["reasons"])
    assert {m.message_id for m in dlq_messages(stack)} == {ids["comma"], ids["nel"], ids["truncated"]}

    # Edit by hand: an invalid edit is refused with the parser's position, and the message stays.
    broken = {**calls, "EDITOR": scripted_editor(tmp_path, ",}", ",,}")}
    refused = patcher("dlq", "edit", ids["comma"], "--yes", check=False, env=broken)
    assert refused.returncode == 1 and "refused: the edit is invalid" in refused.stdout
    assert "line 1 column" in refused.stdout
    assert ids["comma"] in {m.message_id for m in dlq_messages(stack)}
    fixed_by_hand = {**calls, "EDITOR": scripted_editor(tmp_path, ",}", "}")}
    edited = patcher("--json", "dlq", "edit", ids["comma"], "--yes", env=fixed_by_hand)
    assert json.loads(edited.stdout)["fixed"] == 1
    assert_calls_allowed(calls["WAP_AWS_CALL_LOG"], stack)

    # The auto-fix handler, fed a real SQS event from the DLQ: fixes the NEL, reports the rest as failed.
    monkeypatch.setenv("WAP_AUTOFIX_POLICY", "strip_bom,remove_controls_outside_strings")
    monkeypatch.setenv("WAP_AWS_CALL_LOG", str(tmp_path / "lambda-calls.jsonl"))
    result = run_once(stack)
    assert set(result["messages"]) == {ids["nel"], ids["truncated"]}
    assert result["response"] == {"batchItemFailures": [{"itemIdentifier": ids["truncated"]}]}
    assert_calls_allowed(tmp_path / "lambda-calls.jsonl", stack)
    monkeypatch.delenv("WAP_AWS_CALL_LOG")

    # The replays flow to curated: every fixed message exactly once, the truncated one still in the DLQ.
    drive()
    counts = curated_key_counts(stack)
    fixed = [*valid, tab, bom, comma, nel]
    assert counts == Counter({e["idempotency_key"]: 1 for e in fixed})
    assert [m.message_id for m in dlq_messages(stack)] == [ids["truncated"]]
    raw = tables(stack)["raw"].scan().to_arrow().to_pylist()
    replays = {r["original_message_id"]: r for r in raw if r["is_replay"]}
    assert set(replays) == {ids[k] for k in ("tab", "bom", "comma", "nel")}
    assert all(r["replay_token"] for r in replays.values()), "each one granted (the Lambda's too)"
    assert orjson.loads(replays[ids["tab"]]["body"])["currency"] == "USD"
    assert json.loads(run_cli("status", "--json", "--check").stdout)["identity_holds"] is True

    # Every action is in the operator audit log, under who took it.
    entries = json.loads(patcher("--json", "audit-log").stdout)
    actions = Counter((e["operator"], e["action"]) for e in entries)
    assert actions == Counter(
        {
            ("support-bob", "dlq.patch"): 1,
            ("support-bob", "dlq.edit"): 1,
            ("support-bob", "patch.inject"): 2,
            ("dlq-autofix", "dlq.autofix"): 1,
            ("dlq-autofix", "patch.inject"): 1,
        }
    )
    by_action = {e["action"]: e for e in entries}
    assert {r["message_id"] for r in by_action["dlq.patch"]["details"]["replaced"]} == {
        ids["tab"],
        ids["bom"],
    }
    assert {r["message_id"] for r in by_action["dlq.patch"]["details"]["left"]} == {
        ids["comma"],
        ids["nel"],
        ids["truncated"],
    }
    assert (
        by_action["dlq.autofix"]["details"]["replaced"][0]["how"] == "autofix:remove_controls_outside_strings"
    )


def test_patch_and_edit_refuse_before_touching_anything(stack):
    """Exit codes as the other verbs: 2 usage, 3 not in the DLQ, 4 the ingest queue not allow-listed."""
    (dead,) = send_raw(stack, ["{'single': 'quotes'}"])
    drive()
    assert patcher("dlq", "patch", "--remove-chars", "\\t", check=False).returncode == 2
    missing = patcher(
        "dlq", "patch", "--message-id", dead, "--message-id", "nope", "--remove-chars", "\\t", check=False
    )
    assert missing.returncode == 3 and "nope" in missing.stderr
    closed = {"WAP_PATCHER_ALLOWED_QUEUES": "some-other-queue"}
    refused = patcher("dlq", "patch", "--all", "--remove-chars", "\\t", check=False, env=closed)
    assert refused.returncode == 4
    assert patcher("dlq", "edit", "nope", check=False).returncode == 3
    assert [m.message_id for m in dlq_messages(stack)] == [dead], "nothing was consumed"
    assert json.loads(patcher("--json", "audit-log").stdout) == []
