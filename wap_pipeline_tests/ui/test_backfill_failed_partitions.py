"""Re-running the failed batches from the UI as a backfill: Debian's headless Chromium driven by
Playwright, against a `dagster dev` (webserver and daemon) started by the test.

A batch fails its audit; the breaker it trips makes the next batch fail too (fast, in raw). After the
operator's fix (quarantine the record, reset the breaker), the UI shows the two failed partitions of
`standardized/events`; on the pipeline job the user selects the failed partitions and launches a
backfill, and the backfill daemon runs one `standard_ingest` run per batch -- through the run queue,
one writer at a time -- until every layer holds them. The backfill is the job's (raw to the totals),
not `standardized/events` alone: a batch that failed in raw has nothing in raw for standardized to
read, and one published to standardized only would never reach curated.

Screenshots are saved under ``test-artifacts/ui/backfill-*.png``.
"""

import re
import time

import pytest
from dagster import DagsterInstance, DagsterRun, RunsFilter
from playwright.sync_api import expect, sync_playwright

from wap_pipeline.events import make_events
from wap_pipeline.jobs import PIPELINE_JOB, WRITER_TAG
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.dagster_dev import dagster_dev
from wap_pipeline_tests.integration.helpers import breaker_state, curated_key_counts, send
from wap_pipeline_tests.ui.browser import CHROMIUM, shot

pytestmark = pytest.mark.integration

BACKFILL_TAG = "dagster/backfill"
PARTITION_TAG = "dagster/partition"


def pipeline_runs(**tags: str) -> list[DagsterRun]:
    with DagsterInstance.get() as instance:
        return list(instance.get_runs(RunsFilter(job_name=PIPELINE_JOB, tags=tags)))


def backfills() -> list:
    """The instance's backfills (PartitionBackfill: not part of Dagster's public API), newest first."""
    with DagsterInstance.get() as instance:
        return instance.get_backfills()


def wait_for_backfill(timeout_s: float = 300):
    """The one backfill the UI launched, once the daemon has finished it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        launched = backfills()
        assert len(launched) <= 1, f"one click, one backfill: {launched}"
        if launched and launched[0].status.value != "REQUESTED":
            return launched[0]
        time.sleep(2)
    raise AssertionError(f"the backfill did not finish in {timeout_s}s: {backfills()}")


def run_intervals(backfill_id: str) -> list[tuple[float, float]]:
    with DagsterInstance.get() as instance:
        records = instance.get_run_records(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    return sorted((r.start_time, r.end_time) for r in records)


def test_failed_partitions_are_backfilled_from_the_ui_after_the_fix(stack, tmp_path):
    good, bad, after = make_events(6, seed=301), make_events(10, seed=302), make_events(7, seed=303)
    bad[4]["currency"] = "eur"  # ISO 4217 codes are upper case: the audit fails the batch
    send(stack, good)
    run_cli("run", "--until-idle")
    send(stack, bad)
    assert run_cli("run", "--until-idle", check=False).returncode == 1
    send(stack, after)
    # The breaker is RED: the next batch fails fast, before raw reads anything.
    assert run_cli("run", "--until-idle", check=False).returncode == 1
    by_status = {
        status: sorted(r.tags[PARTITION_TAG] for r in pipeline_runs() if r.status.value == status)
        for status in ("SUCCESS", "FAILURE")
    }
    (published,) = by_status["SUCCESS"]
    failed = by_status["FAILURE"]
    assert len(failed) == 2 and breaker_state(stack).status == "RED"

    # The operator's fix, with the CLIs (the Dagster UI has no quarantine).
    patcher("quarantine", "add", bad[4]["event_id"], "--reason", "lower-case currency")
    run_cli("breaker", "reset", "--reason", "bad record quarantined")

    with dagster_dev(tmp_path / "dagster-dev.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # standardized/events, Partitions tab: two failed, one materialized; then the failed ones only.
            page.goto(f"{url}/assets/standardized/events?view=partitions")
            expect(page.get_by_text("Failed (2)")).to_be_visible()
            expect(page.get_by_text("Materialized (1)")).to_be_visible()
            shot(page, "backfill-01-standardized-partitions")
            page.get_by_text("Materialized (1)").click()  # the status filter: failed partitions only
            for batch in failed:
                expect(page.get_by_text(batch, exact=True).first).to_be_visible()
            expect(page.get_by_text(published, exact=True)).to_have_count(0)
            expect(page.get_by_text("2 Partitions Selected")).to_be_visible()
            shot(page, "backfill-02-standardized-failed-partitions")

            # The pipeline job: "Materialize all…", select the failed partitions, launch the backfill.
            page.goto(f"{url}/locations/wap_pipeline/jobs/{PIPELINE_JOB}")
            page.get_by_role("button", name=re.compile(r"Materialize all")).click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Launch runs to materialize 4 assets")).to_be_visible()
            dialog.get_by_role("button", name="Failed", exact=True).click()
            expect(dialog.get_by_text("2 partitions", exact=True)).to_be_visible()
            # The selected keys are shown middle-truncated ("202611…8Z-000"); the whole key is in the DOM.
            for batch in failed:
                expect(dialog.get_by_text(batch, exact=True)).to_be_attached()
            expect(dialog.get_by_text(published, exact=True)).to_have_count(0)
            shot(page, "backfill-03-failed-partitions-selected")
            assert backfills() == []
            dialog.get_by_role("button", name="Launch backfill").click()
            expect(dialog).to_have_count(0)

            # The backfill daemon runs it; the backfill page shows it done, the partitions are materialized.
            backfill = wait_for_backfill()
            page.goto(f"{url}/runs/b/{backfill.backfill_id}")
            expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
            expect(page.get_by_text("100% completed")).to_be_visible()
            shot(page, "backfill-04-backfill-completed")
            page.goto(f"{url}/assets/standardized/events?view=partitions")
            expect(page.get_by_text("Failed (0)")).to_be_visible()
            expect(page.get_by_text("Materialized (3)")).to_be_visible()
            shot(page, "backfill-05-standardized-all-materialized")
        except Exception:
            shot(page, "backfill-failure")
            raise
        finally:
            browser.close()

    assert backfill.status.value == "COMPLETED_SUCCESS", backfill
    runs = pipeline_runs(**{BACKFILL_TAG: backfill.backfill_id})
    assert sorted(r.tags[PARTITION_TAG] for r in runs) == failed
    assert all(r.status.value == "SUCCESS" for r in runs)
    # Backfill runs are the job's runs: they carry its writer tag, so the run queue let one through at a time.
    assert all(r.tags.get(WRITER_TAG) == PIPELINE_JOB for r in runs)
    (first_start, first_end), (second_start, _) = run_intervals(backfill.backfill_id)
    assert first_end <= second_start, "two writers ran at once"

    assert breaker_state(stack).status == "GREEN"
    counts = curated_key_counts(stack)
    assert len(counts) == len(good) + len(bad) - 1 + len(after) and max(counts.values()) == 1
    run_cli("status", "--check")
