"""`wap-pipeline status` accounting for a batch whose every record was quarantined."""

import json

import pytest

from wap_pipeline.events import make_events
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.helpers import send

pytestmark = pytest.mark.integration


def test_a_batch_of_only_quarantined_records_is_accounted_for(stack):
    """Found by the chaos suite (seed 61): a batch whose only record was quarantined is published
    as an empty append, which has no `added-records` in its summary; status reported it as not
    published and `status --check` failed for good although every message was accounted for."""
    (bad,) = make_events(1, seed=61)
    bad["currency"] = "eur"
    send(stack, [bad])
    assert drive().failed
    patcher("quarantine", "add", bad["event_id"], "--reason", "lower-case currency")
    patcher("resume-pipeline", "--pipeline", "standard_ingest", "--reason", "bad record quarantined")

    status = json.loads(run_cli("status", "--json", "--check").stdout)
    (account,) = status["batches"]
    assert (account["landed"], account["quarantined"], account["published"], account["inserted"]) == (
        1,
        1,
        0,
        0,
    )
    assert account["identity_holds"] and status["identity_holds"]
