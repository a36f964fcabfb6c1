"""The pipeline driven in the test's own process: for tests whose point is what the pipeline does with
their data, not the CLI or a crash (those keep `wap-pipeline run --until-idle` as a subprocess).

It is the headless runner itself (:func:`wap_pipeline.runner.run_until_idle`, what `run --until-idle`
calls), so the sensors keep one cursor each and the runs are the same runs, re-executable from
failure -- without a process to start and the definitions to import again per command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from unittest import mock

from dagster import DagsterInstance

from wap_pipeline.runner import RunnerReport, run_until_idle
from wap_pipeline.settings import Settings
from wap_pipeline.state import ensure_dagster_home


def drive(
    settings: Settings | None = None, timeout_s: float = 600.0, env: Mapping[str, str] | None = None
) -> RunnerReport:
    """Run until idle (a failed run does not stop the others; ``.failed`` lists them). ``env`` is set
    for this drive only, as `WAP_X=... wap-pipeline run --until-idle` would set it for one command."""
    ensure_dagster_home(settings or Settings.from_env())
    with mock.patch.dict(os.environ, env or {}), DagsterInstance.get() as instance:
        report = run_until_idle(instance, timeout_s, log_level="WARNING")
    assert report.idle, f"the pipeline was not idle after {timeout_s:.0f}s: {report.runs}"
    return report
