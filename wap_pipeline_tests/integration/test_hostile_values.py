"""Well-formed JSON with hostile values, over the wire: the runbook's loop always gets out.

Good events and 25 kinds of hostile objects are sent together. The operator follows only the
runbook's loop -- `data-patcher failures --json`, `data-patcher quarantine add` for each record it
names, `data-patcher resume-pipeline` -- until the breaker is GREEN and nothing has failed. Then
every good event is in curated once, and every message is accounted for (curated or quarantine).
"""

from __future__ import annotations

import json

import orjson
import pytest

from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import breaker_state, curated_key_counts, send_raw, tables

pytestmark = pytest.mark.integration


def hostile_bodies(events: list[dict]) -> dict[str, str]:
    """25 kinds of well-formed objects with hostile values, each built on an event of its own."""
    e = iter(events)

    def changed(**values) -> str:
        return orjson.dumps({**next(e), **values}).decode()

    def without(name: str) -> str:
        event = next(e)
        del event[name]
        return orjson.dumps(event).decode()

    repeated = orjson.dumps(next(e)).decode()[:-1] + ', "amount_minor": 1}'
    return {
        "empty object": "{}",
        "event_id null": changed(event_id=None),
        "event_id number": changed(event_id=42),
        "event_id object": changed(event_id={"id": "x"}),
        "event_id blank": changed(event_id="  "),
        "no event_id": without("event_id"),
        "event_id of 100k characters": changed(event_id="e" * 100_000),
        "year 1": changed(event_timestamp="0001-01-01T00:00:00Z"),
        "year 9999": changed(event_timestamp="9999-12-31T23:59:59Z"),
        "year 1 east of UTC": changed(event_timestamp="0001-01-01T00:00:00+10:00"),
        "epoch integer timestamp": changed(event_timestamp=1764345600),
        "impossible date": changed(event_timestamp="2026-02-30T10:00:00Z"),
        "amount past int64": changed(amount_minor=2**63),
        "amount past uint64": '{"amount_minor": 18446744073709551621, ' + changed()[1:],
        "huge float amount": changed(amount_minor=1e308),
        "amount as string": changed(amount_minor="12.50"),
        "amount boolean": changed(amount_minor=True),
        "smallest int64 amount": changed(amount_minor=-(2**63)),
        "account of 100k characters": changed(account_id="a" * 100_000),
        "bidi override in event_type": changed(event_type="\u202epayment"),
        "zero-width in account": changed(account_id="acct\u200b_00001"),
        "deep extra field": changed(meta={"a": {"b": {"c": [1, {"d": None}]}}}),
        "currency of one emoji": changed(currency="\U0001f4b6"),
        "repeated key": repeated,
        "idempotency key number": changed(idempotency_key=7),
    }


def test_hostile_objects_then_the_runbook_loop_until_green(stack):
    good = make_events(20, seed=901)
    hostile = hostile_bodies(make_events(30, seed=902))
    assert len(hostile) == 25
    send_raw(stack, [orjson.dumps(event).decode() for event in good] + list(hostile.values()))
    drive()

    rounds = 0
    while True:
        listed = patcher("failures", "--json", check=False)
        assert listed.returncode in (0, 1), listed.stderr[-3000:]
        batches = json.loads(listed.stdout)["batches"]
        if not batches:
            break
        rounds += 1
        assert rounds <= 6, f"the loop does not converge: {batches}"
        for batch in batches:
            assert batch["step"] == "standardized", batch
            for record in batch["records"]:
                assert record["reasons"], record
                patcher("quarantine", "add", record["quarantine_id"], "--reason", "hostile value")
        patcher("resume-pipeline", "--pipeline", "standard_ingest", "--reason", "quarantined", check=False)

    assert breaker_state(stack).status == "GREEN"
    counts = curated_key_counts(stack)
    assert all(counts[event["idempotency_key"]] == 1 for event in good), "every good event, once"
    published = wap.published_batches(tables(stack)["standardized"])
    assert published == wap.published_batches(tables(stack)["curated"]) and published
    status = run_cli("status", "--json", "--check", check=False)
    document = json.loads(status.stdout)
    assert status.returncode == 0, status.stdout[-3000:]
    assert document["accounted"] == document["messages_sent"] == 45
