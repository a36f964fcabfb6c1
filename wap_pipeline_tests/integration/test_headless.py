"""The headless Dagster services: one stack per instance, shared by the processes that need it at
once, stopped after the last of them, and never outliving a user killed with kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wap_pipeline.headless import STATE_FILE, dagster_stack
from wap_pipeline.settings import Settings
from wap_pipeline.state import ensure_dagster_home
from wap_pipeline.webserver import DagsterWebserver

pytestmark = pytest.mark.integration

# A user of the stack in a process of its own: prints the URL, then holds the stack until stdin closes.
USER = """
import sys
from pathlib import Path
from wap_pipeline.headless import dagster_stack
with dagster_stack(Path(sys.argv[1])) as url:
    print(url, flush=True)
    sys.stdin.read()
print("released", flush=True)
"""


def _user(home: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", USER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return process, process.stdout.readline().strip()


def _stops_answering(url: str, timeout_s: float = 60.0) -> bool:
    api, deadline = DagsterWebserver(url), time.monotonic() + timeout_s
    while api.reachable():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_processes_at_once_share_one_stack_and_the_last_out_stops_it(stack):
    home = ensure_dagster_home(Settings.from_env())
    owner, url = _user(home)
    assert url.startswith("http://127.0.0.1:"), url
    api = DagsterWebserver(url)
    assert api.code_location_loaded() and not api.unhealthy_daemons()
    with dagster_stack(home) as second_url:  # a second user joins the running stack
        assert second_url == url
        owner.stdin.close()  # the owner is done first: it waits for us before stopping the stack
        time.sleep(2)
        assert owner.poll() is None and api.reachable()
    assert owner.wait(timeout=60) == 0
    assert _stops_answering(url)
    assert not (home / STATE_FILE).exists()


def test_a_user_killed_with_sigkill_takes_its_stack_down_and_the_next_starts_a_new_one(stack):
    home = ensure_dagster_home(Settings.from_env())
    owner, url = _user(home)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert _stops_answering(url)
    with dagster_stack(home) as new_url:  # the dead owner's state file does not mislead the next user
        assert new_url != url
        assert DagsterWebserver(new_url).code_location_loaded()
