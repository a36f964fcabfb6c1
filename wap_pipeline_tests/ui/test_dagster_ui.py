"""The operator's view in a real browser: Debian's headless Chromium driven by Playwright, against a
`dagster dev` started by the test, on a stack with one batch that failed its audit.

Screenshots are saved under ``test-artifacts/ui/`` (kept by CI as the test's artifacts).
"""

import time

import pytest
from dagster import DagsterInstance, DagsterRun, RunsFilter
from playwright.sync_api import expect, sync_playwright

from wap_pipeline.events import make_events
from wap_pipeline_tests.integration.cli import patcher, run_cli
from wap_pipeline_tests.integration.dagster_dev import dagster_dev
from wap_pipeline_tests.integration.helpers import breaker_state, curated_key_counts, send
from wap_pipeline_tests.ui.browser import ARTIFACTS, CHROMIUM, shot

pytestmark = pytest.mark.integration


def pipeline_runs() -> list[DagsterRun]:
    with DagsterInstance.get() as instance:
        return list(instance.get_runs(RunsFilter(job_name="standard_ingest")))


def wait_for_child(parent_id: str, timeout_s: float = 240) -> DagsterRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = [r for r in pipeline_runs() if r.parent_run_id == parent_id]
        if children and children[0].is_finished:
            return children[0]
        time.sleep(2)
    raise AssertionError(f"no finished re-execution of {parent_id} after {timeout_s}s")


def test_failed_audit_is_visible_and_re_executed_from_the_ui(stack, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    events = make_events(12, seed=101)
    bad = events[5]
    bad["idempotency_key"] = None
    send(stack, events)
    assert run_cli("run", "--until-idle", check=False).returncode == 1
    (failed_run,) = pipeline_runs()
    batch = failed_run.tags["dagster/partition"]

    with dagster_dev(tmp_path / "dagster-dev.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # The asset graph: the three table layers and the operations assets, by group.
            page.goto(f"{url}/asset-groups")
            for group in ("ingestion", "standardized", "curated", "operations"):
                expect(page.get_by_text(group, exact=True).last).to_be_visible()
            shot(page, "01-asset-graph")
            page.goto(f"{url}/assets")
            for asset in (
                "raw / events",
                "standardized / events",
                "curated / events",
                "curated / daily_totals",
                "operations / dlq",
                "operations / circuit_breaker",
                "operations / quarantine",
            ):
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            shot(page, "02-catalog")

            # The standardized asset's Checks tab: the failed audit, its partition and metadata.
            page.goto(f"{url}/assets/standardized/events?view=checks")
            expect(page.get_by_text("blocking", exact=True)).to_be_visible()
            expect(page.get_by_text("Failed").first).to_be_visible()
            expect(page.get_by_text(batch, exact=True).first).to_be_visible()
            for key in ("invalid_rows", "sample_invalid_ids", "branch"):
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            shot(page, "03-standardized-checks")

            # The operator's fix, then "Re-execute from failure" on the failed run, in the UI.
            patcher("quarantine", "add", bad["event_id"], "--reason", "null idempotency_key")
            run_cli("breaker", "reset", "--reason", "bad record quarantined")
            page.goto(f"{url}/runs/{failed_run.run_id}")
            expect(page.get_by_text("Re-execute all (*)")).to_be_visible()
            page.locator("button:has([aria-label='arrow_drop_down'])").last.click()
            page.get_by_text("From failure", exact=True).click()
            child = wait_for_child(failed_run.run_id)
            page.goto(f"{url}/runs/{child.run_id}")
            expect(page.get_by_text("Success").first).to_be_visible()
            expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
            shot(page, "04-reexecuted-run")
        except Exception:
            shot(page, "failure")
            raise
        finally:
            browser.close()

    assert child.status.value == "SUCCESS" and child.tags["dagster/partition"] == batch
    assert breaker_state(stack).status == "GREEN"
    counts = curated_key_counts(stack)
    assert len(counts) == 11 and max(counts.values()) == 1
