"""What both CLIs do the same way: drive the pipeline headless, re-drive failed batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from wap_pipeline.settings import Settings

if TYPE_CHECKING:
    from wap_pipeline.webserver import Rerun


@dataclass
class DriveResult:
    run_ids: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    idle: bool = False


def drive_until_idle(
    settings: Settings,
    timeout: float = 900.0,
    quiet: bool = False,
    producer_active: Callable[[], bool] = lambda: False,
) -> DriveResult:
    """Run the sensors, and the runs they request, until idle."""
    from dagster import DagsterInstance

    from wap_pipeline.runner import run_until_idle
    from wap_pipeline.state import ensure_dagster_home

    ensure_dagster_home(settings)
    echo = (lambda m: None) if quiet else click.echo
    level = "WARNING" if quiet else "INFO"
    result = DriveResult()
    with DagsterInstance.get() as instance:
        report = run_until_idle(instance, timeout, log=echo, log_level=level, producer_active=producer_active)
    result.run_ids = [r.run_id for r in report.runs]
    result.failed = [
        f"{r.job_name} {r.partition or ''} run {r.run_id}".replace("  ", " ") for r in report.failed
    ]
    result.idle = report.idle
    for line in result.failed:
        click.echo(f"FAILED: {line}", err=True)
    return result


@dataclass
class RedriveResult:
    path: str  # "webserver <url>", or "headless" (Dagster's services started for the command)
    reruns: list[Rerun]

    @property
    def failed(self) -> list[str]:
        return [f"{r.partition} run {r.run_id}" for r in self.reruns if r.status != "SUCCESS"]


def redrive_failed(
    settings: Settings,
    url: str,
    partitions: list[str] | None = None,
    wait: bool = True,
    timeout: float = 900.0,
    quiet: bool = False,
) -> RedriveResult:
    """The one re-drive path (`wap-pipeline redrive`, `rerun-failed`, `data-patcher resume-pipeline`):
    re-execute the failed batches from failure through Dagster's webserver -- the one at ``url``, else
    the services started for this Dagster instance (:mod:`wap_pipeline.headless`) -- as the UI's
    "Re-execute from failure" does. The runs go through the run queue; runs whose process died
    (a headless runner killed mid-run) are marked failed first, so they are re-driven too.
    """
    from dagster import DagsterInstance

    from wap_pipeline.headless import dagster_stack
    from wap_pipeline.runner import fail_orphaned_runs
    from wap_pipeline.state import ensure_dagster_home
    from wap_pipeline.webserver import DagsterWebserver, rerun_failed

    echo = (lambda m: None) if quiet else click.echo
    home = ensure_dagster_home(settings)
    with DagsterInstance.get() as instance:
        fail_orphaned_runs(instance, echo)
    api = DagsterWebserver(url)
    if api.reachable():
        return RedriveResult(f"webserver {url}", rerun_failed(api, partitions, wait, timeout, echo))
    with dagster_stack(home) as stack_url:
        return RedriveResult(
            "headless", rerun_failed(DagsterWebserver(stack_url), partitions, wait, timeout, echo)
        )
