"""The code location loads: what `dagster dev`, the daemon and `dagster definitions validate` load."""

import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from wap_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_load_in_process():
    Definitions.validate_loadable(defs())
    repository = defs().get_repository_def()
    assert {"standard_ingest", "table_maintenance", "observe_operations"} <= {
        job.name for job in repository.get_all_jobs()
    }


def test_dagster_definitions_validate_passes_on_the_workspace():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
