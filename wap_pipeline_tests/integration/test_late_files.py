"""Issue 19: discovery is event-driven, so a late file is never skipped, and a lost notification is
caught by the reconciliation and recovered by a documented command."""

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from wap_pipeline import aws
from wap_pipeline.events import make_events
from wap_pipeline.provision import queue_url
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import run_cli
from wap_pipeline_tests.integration.helpers import check_evaluations, curated_key_counts, land_file, send

pytestmark = pytest.mark.integration

NO_GRACE = {"WAP_RECONCILE_AFTER_MINUTES": "0"}


def _bodies(events: list[dict]) -> list[str]:
    return [orjson.dumps(e).decode() for e in events]


def test_a_late_file_under_yesterdays_hour_folder_reaches_curated(stack):
    first = make_events(20, seed=71)
    send(stack, first)
    drive()
    late = make_events(10, seed=72)
    # A delivery Firehose retried for a day: named after yesterday's hour, created now.
    land_file(stack, _bodies(late), hour_folder=datetime.now(UTC) - timedelta(days=1))
    drive()
    assert set(curated_key_counts(stack)) == {e["idempotency_key"] for e in first + late}
    run_cli("status", "--check")
    assert json.loads(run_cli("reconcile", "--json", env=NO_GRACE).stdout)["unbatched"] == []


def test_a_file_whose_notification_was_lost_is_named_then_adopted(stack):
    events = make_events(10, seed=73)
    key, _ = land_file(stack, _bodies(events))
    sqs = aws.client("sqs", stack)
    sqs.purge_queue(QueueUrl=queue_url(sqs, stack.landing_events_queue))  # the notification is lost
    assert not drive(env=NO_GRACE).failed
    assert curated_key_counts(stack) == {}, "nobody announced the file: no batch read it"

    evaluation = check_evaluations(["raw", "events"], "landed_files_reconciled")[0]  # the newest
    assert evaluation.passed is False
    assert evaluation.metadata["sample_keys"].value == [key]
    found = run_cli("reconcile", "--json", env=NO_GRACE, check=False)
    assert found.returncode == 1 and json.loads(found.stdout)["unbatched"] == [key]

    adopted = json.loads(
        run_cli("reconcile", "--adopt", "--json", "--reason", "lost notification", env=NO_GRACE).stdout
    )
    assert len(adopted["adopted_batches"]) == 1
    assert not drive(env=NO_GRACE).failed
    assert set(curated_key_counts(stack)) == {e["idempotency_key"] for e in events}
    assert json.loads(run_cli("reconcile", "--json", env=NO_GRACE).stdout)["unbatched"] == []
    run_cli("status", "--check")
