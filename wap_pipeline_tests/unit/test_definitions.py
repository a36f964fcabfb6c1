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


def test_every_resource_is_wired_from_the_settings_it_is_given():
    """The one place the system is wired (issue 16): what the resources use is what they were given,
    whatever the process environment says."""
    from wap_pipeline.definitions import resources_for
    from wap_pipeline.settings import Settings

    settings = Settings(queue_name="given-queue", pipeline_name="given-pipeline", engine="spark")
    resources = resources_for(settings)
    assert resources["aws"].settings() == settings
    assert resources["breaker"].breaker().pipeline == "given-pipeline"
    assert resources["engine"].name() == "spark"
    assert {resource.config.settings() for resource in resources.values()} == {settings}


def test_no_asset_or_resource_reads_the_environment():
    """Settings reach assets and resources through the resources' configuration only."""
    package = ROOT / "wap_pipeline"
    readers = [
        str(path.relative_to(ROOT))
        for folder in ("assets", "resources", "application")
        for path in sorted((package / folder).glob("*.py"))
        if "from_env(" in path.read_text() or "os.environ" in path.read_text()
    ]
    assert readers == []


def test_nothing_in_the_product_reads_the_faults_variable():
    """Failpoints are armed by the tests' hooks plugin, not by the product."""
    package = ROOT / "wap_pipeline"
    readers = [
        str(p.relative_to(ROOT)) for p in sorted(package.rglob("*.py")) if "WAP_FAULTS" in p.read_text()
    ]
    assert readers == []
