"""docs/runbook.md is executable: for each failure mode, create it on a fresh stack (the pipeline driven
in this process, or `wap-pipeline` where the command's exit or death is the failure), then run the
runbook's own blocks (``sh runbook=<id> step=recover|confirm``) exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest

from wap_pipeline.events import make_events
from wap_pipeline_tests.conftest import free_port
from wap_pipeline_tests.fault_proxy import FaultProxy
from wap_pipeline_tests.inprocess import drive
from wap_pipeline_tests.integration.cli import BIN, run_cli
from wap_pipeline_tests.integration.dagster_dev import dagster_dev
from wap_pipeline_tests.integration.helpers import land_file, scripted_editor, send, send_raw

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(r"```sh runbook=(\S+) step=(\S+)\n(.*?)```", re.DOTALL)


def runbook_blocks() -> dict[str, list[tuple[str, str]]]:
    """Blocks by failure-mode id, in document order: [(step, commands)]."""
    blocks: dict[str, list[tuple[str, str]]] = {}
    for mode, step, commands in _BLOCK.findall((DOCS / "runbook.md").read_text()):
        blocks.setdefault(mode, []).append((step, commands))
    return blocks


def run_block(commands: str, variables: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONWARNINGS": "ignore",
            "WAP_OPERATOR": "runbook-test",
            **variables,
        },
    )
    assert result.returncode == 0, (
        f"runbook block failed ({result.returncode}):\n{commands}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )


def batch_of_last_run() -> str:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return sorted(instance.get_dynamic_partitions("landing_batches"))[-1]


# --- one way to create each failure ---------------------------------------------------------------


def malformed_json(stack, resources: ExitStack) -> dict[str, str]:
    """Garbage, a raw tab in a string (patch by rule), a trailing comma (edit by hand) and a BOM (the
    auto-fix handler) in the DLQ."""
    events = make_events(7, seed=301)
    send(stack, events[:4])
    tab, comma, bom = (orjson.dumps(e).decode() for e in events[4:])
    garbage, patch, edit, _ = send_raw(
        stack,
        [
            '{"event_id": "evt_trunc',
            tab.replace('"event_type":"', '"event_type":"\t', 1),
            comma[:-1] + ",}",
            "\ufeff" + bom,
        ],
    )
    assert not drive().failed
    editor = scripted_editor(stack.state_dir, ",}", "}")
    return {"GARBAGE_ID": garbage, "PATCH_ID": patch, "EDIT_ID": edit, "EDITOR": editor}


def throttling(stack, resources: ExitStack) -> dict[str, str]:
    proxy = resources.enter_context(FaultProxy(stack.endpoint_url))
    proxy.plan.error_rate = proxy.plan.partial_put_rate = 0.2
    send(stack, make_events(20, seed=302))
    assert not drive(env={"AWS_ENDPOINT_URL": proxy.endpoint}).failed
    assert proxy.stats.errors_injected > 0
    return {}


def regional_outage(stack, resources: ExitStack) -> dict[str, str]:
    send(stack, make_events(10, seed=303))
    unreachable = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "WAP_AWS_MAX_ATTEMPTS": "2"}
    result = run_cli("run", "--until-idle", "--timeout", "5", check=False, env=unreachable)
    assert result.returncode == 3, "not idle: AWS unreachable"
    return {}


def schema_mismatch(stack, resources: ExitStack) -> dict[str, str]:
    events = make_events(10, seed=304)
    events[2]["loyalty_tier"] = "gold"
    send(stack, events)
    assert drive().failed
    return {"BATCH_ID": batch_of_last_run()}


def cde_violation(stack, resources: ExitStack) -> dict[str, str]:
    events = make_events(10, seed=305)
    events[4]["idempotency_key"] = None
    send(stack, events)
    assert drive().failed
    return {"BATCH_ID": batch_of_last_run(), "EVENT_ID": events[4]["event_id"]}


def curated_failure(stack, resources: ExitStack) -> dict[str, str]:
    send(stack, make_events(10, seed=306))
    faults = {"WAP_FAULTS": "curated.before_commit=raise*"}
    assert drive(env=faults).failed
    url = resources.enter_context(dagster_dev(Path(stack.state_dir) / "dagster-dev.log"))
    return {"BATCH_ID": batch_of_last_run(), "DAGSTER_URL": url}


def crash(stack, resources: ExitStack) -> dict[str, str]:
    send(stack, make_events(10, seed=307))
    killed = run_cli(
        "run", "--until-idle", check=False, env={"WAP_FAULTS": "standardized.after_branch_write=kill"}
    )
    assert killed.returncode != 0
    return {"BATCH_ID": batch_of_last_run()}


def bad_character(stack, resources: ExitStack) -> dict[str, str]:
    events = make_events(30, seed=308)
    events[17]["currency"] = "US\x1fD"
    key, _ = land_file(stack, [orjson.dumps(e).decode() for e in events])
    assert drive().failed
    return {"FILE_URI": f"s3://{stack.landing_bucket}/{key}", "EVENT_ID": events[17]["event_id"]}


SCENARIOS: dict[str, Callable[..., dict[str, str]]] = {
    "1.1": malformed_json,
    "1.2": throttling,
    "1.3": regional_outage,
    "2.1": schema_mismatch,
    "2.2": cde_violation,
    "3.1": curated_failure,
    "5.2": bad_character,
    "crash": crash,
}


def test_every_failure_mode_of_the_fmea_has_a_runbook_section_with_commands():
    modes = set(re.findall(r"### Failure Mode (\d+\.\d+)", (DOCS / "fmea-recovery-strategy.md").read_text()))
    blocks = runbook_blocks()
    assert modes and modes <= set(blocks), f"no runbook commands for {sorted(modes - set(blocks))}"
    assert set(blocks) == set(SCENARIOS), "every runbook section is run by a scenario below, and only those"
    for mode, steps in blocks.items():
        assert any(step == "confirm" for step, _ in steps), f"{mode}: how to confirm recovery is missing"


@pytest.mark.parametrize("mode", sorted(SCENARIOS))
def test_runbook_recovers(mode, stack):
    with ExitStack() as resources:
        variables = SCENARIOS[mode](stack, resources)
        for _, commands in runbook_blocks()[mode]:
            run_block(commands, variables)
    # The messages are where the runbook says they are, nothing lost or doubled.
    status = orjson.loads(run_cli("status", "--json").stdout)
    assert status["identity_holds"] is True, status
