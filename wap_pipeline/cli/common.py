"""What both CLIs do the same way: drive the pipeline headless, re-drive failed batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import click

from wap_pipeline.settings import Settings


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
    redrive_first: bool = False,
    partitions: list[str] | None = None,
) -> DriveResult:
    """Optionally re-drive failed batches (from failure), then run the sensors until idle."""
    from dagster import DagsterInstance

    from wap_pipeline.runner import redrive, run_until_idle
    from wap_pipeline.state import ensure_dagster_home

    ensure_dagster_home(settings)
    echo = (lambda m: None) if quiet else click.echo
    level = "WARNING" if quiet else "INFO"
    result = DriveResult()
    with DagsterInstance.get() as instance:
        reports = []
        if redrive_first:
            reports.append(redrive(instance, partitions, log=echo, log_level=level))
        if not any(r.failed for r in reports):
            reports.append(
                run_until_idle(instance, timeout, log=echo, log_level=level, producer_active=producer_active)
            )
    for report in reports:
        result.run_ids += [r.run_id for r in report.runs]
        result.failed += [
            f"{r.job_name} {r.partition or ''} run {r.run_id}".replace("  ", " ") for r in report.failed
        ]
    result.idle = reports[-1].idle
    for line in result.failed:
        click.echo(f"FAILED: {line}", err=True)
    return result
