"""Only data-patcher issues replays (issue 17, item 4), over the wire.

A producer's copy of a quarantined event that says ``is_replay`` -- as a message attribute, in the
body, with a made-up token, or with the token of data-patcher's own replay on another body -- stays
masked, takes no precedence in curated, and is counted; data-patcher's replay of the same event
passes the quarantine and supersedes the original.
"""

import json
from dataclasses import replace

import orjson
import pytest
from botocore.exceptions import ClientError
from dagster import AssetKey, DagsterInstance

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.rules.replays import ReplayGrant, body_sha256
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import replay_grants, send, send_raw, tables

pytestmark = pytest.mark.integration


def standardized_materializations() -> dict[str, dict]:
    """The standardized step's materialization metadata, by batch."""
    with DagsterInstance.get() as instance:
        records = instance.fetch_materializations(AssetKey(["standardized", "events"]), limit=100).records
    return {
        r.partition_key: {k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records
    }


def curated_row(stack, event_id: str) -> dict:
    (row,) = [r for r in tables(stack)["curated"].scan().to_arrow().to_pylist() if r["event_id"] == event_id]
    return row


def newest_batch(stack) -> str:
    return wap.published_batches(tables(stack)["standardized"])[-1]


def test_a_producers_is_replay_stays_masked_and_only_data_patchers_replay_passes(stack, tmp_path):
    events = make_events(8, seed=171)
    original = events[2]
    send(stack, events)
    drive()
    patcher("quarantine", "add", original["event_id"], "--reason", "amount wrong at source")

    # A producer re-sends "fixed" copies claiming to be replays: attribute, body, a made-up token.
    claimed = {**original, "amount_minor": original["amount_minor"] + 100}
    key = original["idempotency_key"]
    send_raw(
        stack,
        [
            orjson.dumps(claimed).decode(),
            orjson.dumps({**claimed, "is_replay": True}).decode(),
            orjson.dumps(claimed).decode(),
        ],
        [
            {"is_replay": "true", "idempotency_key": key},
            {"idempotency_key": key},
            {"is_replay": "true", "idempotency_key": key, "replay_token": "0" * 32},
        ],
    )
    drive()
    claims_batch = newest_batch(stack)
    assert wap.scan_batch(tables(stack)["standardized"], wap.MAIN, claims_batch).num_rows == 0, "all masked"
    row = curated_row(stack, original["event_id"])
    assert (row["amount_minor"], row["is_replay"]) == (original["amount_minor"], False)
    metadata = standardized_materializations()[claims_batch]
    assert (metadata["quarantined_skipped"], metadata["unauthorized_replays"]) == (3, 3)
    summary = wap.published_snapshot(tables(stack)["standardized"], claims_batch).summary
    assert summary[wap.UNAUTHORIZED_REPLAYS_PROPERTY] == "3"

    # data-patcher's replay of the corrected event passes the quarantine and supersedes the original.
    corrected = {**original, "amount_minor": original["amount_minor"] + 1}
    fixed = tmp_path / "fixed.ndjson"
    fixed.write_bytes(orjson.dumps(corrected) + b"\n")
    dry = json.loads(patcher("--json", "replay", str(fixed), "--dry-run").stdout)
    assert (dry["injected"], dry["refused"], dry["dry_run"]) == (0, 0, True)
    replayed = json.loads(patcher("--json", "replay", str(fixed), "--reason", "amount corrected").stdout)
    assert (replayed["injected"], replayed["refused"]) == (1, 0)
    drive()
    replay_batch = newest_batch(stack)
    row = curated_row(stack, original["event_id"])
    assert (row["amount_minor"], row["is_replay"]) == (corrected["amount_minor"], True)
    assert standardized_materializations()[replay_batch]["unauthorized_replays"] == 0

    # The replay's token, lifted from raw onto another body, is worth nothing.
    raw = wap.scan_batch(tables(stack)["raw"], wap.MAIN, replay_batch).to_pylist()
    (token,) = [r["replay_token"] for r in raw if r["replay_token"]]
    stolen = {**corrected, "amount_minor": corrected["amount_minor"] + 999}
    send(stack, [stolen], [{"is_replay": "true", "idempotency_key": key, "replay_token": token}])
    drive()
    stolen_batch = newest_batch(stack)
    assert wap.scan_batch(tables(stack)["standardized"], wap.MAIN, stolen_batch).num_rows == 0
    assert standardized_materializations()[stolen_batch]["unauthorized_replays"] == 1
    row = curated_row(stack, original["event_id"])
    assert (row["amount_minor"], row["is_replay"]) == (corrected["amount_minor"], True)
    status = json.loads(run_cli("status", "--json").stdout)
    by_batch = {b["batch_id"]: b["unauthorized_replays"] for b in status["batches"]}
    assert (by_batch[claims_batch], by_batch[replay_batch], by_batch[stolen_batch]) == (3, 0, 1)
    assert status["unauthorized_replays"] == 4


def test_replay_refuses_records_that_are_not_quarantined_or_would_fail(stack, tmp_path):
    good, not_quarantined = make_events(2, seed=172)
    patcher("quarantine", "add", good["event_id"], "--reason", "fixed copy to follow")
    fixed = tmp_path / "fixed.ndjson"
    lines = [
        orjson.dumps({**good, "currency": "eur"}),  # still breaks a CDE rule
        orjson.dumps(not_quarantined),
        b"not json",
    ]
    fixed.write_bytes(b"\n".join(lines) + b"\n")
    refused = patcher("--json", "replay", str(fixed), check=False)
    assert refused.returncode == 1
    outcome = json.loads(refused.stdout)
    assert (outcome["injected"], outcome["refused"]) == (0, 3)
    reasons = [r["reasons"] for r in outcome["records"]]
    assert "currency_invalid" in reasons[0][0]
    assert reasons[1] == [
        f"{not_quarantined['event_id']} is not quarantined: a replay replaces a quarantined record "
        "(`data-patcher quarantine add` it first; a new event goes through the producer)"
    ]
    assert reasons[2] == ["not a JSON object"]
    log = json.loads(patcher("--json", "audit-log").stdout)
    assert [e["action"] for e in log] == ["quarantine.add"], "nothing was sent"


def test_a_grant_is_written_once_and_read_back_in_pages(stack):
    grants = replay_grants(stack)
    first = ReplayGrant("tok", "evt_a", body_sha256("{}"), "support-bob", "2026-11-29T12:00:00+00:00", "p1")
    grants.grant([first])
    with pytest.raises(ClientError) as raised:  # a token is never re-pointed at another record
        grants.grant([replace(first, quarantine_id="evt_b")])
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    many = [replace(first, token=f"tok-{n}", quarantine_id=f"evt_{n}") for n in range(150)]
    grants.grant(many)
    found = grants.lookup(["tok", "unknown", *(g.token for g in many)])
    assert found == {g.token: g for g in [first, *many]}
