"""Dagster's own services for one instance (a ``DAGSTER_HOME``), started in the background on demand.

:func:`dagster_stack` yields the URL of a webserver that, with its daemon and code server, serves the
instance: the stack already running for it, or one it starts. What runs:

* ``dagster api grpc`` -- the code server: the definitions, loaded once and shared by the webserver,
  the daemon and the run workers it starts (``dagster dev`` gives the webserver and the daemon one each);
* ``dagster-webserver`` -- the UI and the GraphQL API;
* ``dagster-daemon run`` -- sensors with their own cursors, the run queue (with the ``wap/writer``
  limit of dagster.yaml), run monitoring, schedules and backfills.

They run under :mod:`wap_pipeline.supervisor`, which stops them when the process that started them
exits, ``kill -9`` included. Processes that need the services at the same time share one stack: the
first starts it and stops it after the last has finished. File locks in the home decide who is who:

* ``.stack-users.lock`` -- held shared by every user while it uses the stack;
* ``.stack-owner.lock`` -- held by the user that started it, which takes the users' lock exclusively
  before stopping it (so waits for the others);
* ``.stack.json`` -- the webserver's URL, written once the stack answers.

Before stopping, the owner waits for the runs the daemon queued or started meanwhile (its sensors keep
working while the stack is up); a new owner marks failed any run an earlier stack left unfinished.

The stack's workspace file, log and code server port live in ``.stack/`` under the home.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from wap_pipeline.runner import executed_by_a_runner
from wap_pipeline.webserver import CODE_LOCATION, DagsterWebserver, WebserverError

USERS_LOCK = ".stack-users.lock"
OWNER_LOCK = ".stack-owner.lock"
STATE_FILE = ".stack.json"
STACK_DIR = ".stack"
DEFINITIONS_MODULE = "wap_pipeline.definitions"
STOP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 600.0
_STARTED = (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)


class StackError(RuntimeError):
    """The Dagster services could not be started (the message ends with their log)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def stack_commands(workdir: Path, code_port: int, web_port: int) -> list:
    """The code server, the webserver and the daemon, the last two reading the code server's workspace."""
    workspace = workdir / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        f"  - grpc_server: {{host: 127.0.0.1, port: {code_port}, location_name: {CODE_LOCATION}}}\n"
    )
    return [
        {  # the webserver and the daemon load the workspace once, when they start: after this listens
            "argv": [_bin("dagster"), "api", "grpc", "-m", DEFINITIONS_MODULE, "-a", "defs"]
            + ["-h", "127.0.0.1", "-p", str(code_port), "--location-name", CODE_LOCATION],
            "port": code_port,
        },
        [_bin("dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)],
        [_bin("dagster-daemon"), "run", "-w", str(workspace)],
    ]


@contextmanager
def dagster_stack(home: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """The URL of the webserver serving the Dagster instance in ``home``, for as long as the block runs."""
    home = Path(home)
    deadline = time.monotonic() + timeout_s
    with open(home / USERS_LOCK, "a+") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        while True:
            owner = _try_lock(home / OWNER_LOCK)
            if owner is not None:
                with owner:
                    yield from _own_stack(home, users, deadline)
                return
            url = _running_stack_url(home)
            if url is not None:
                yield url
                return
            if time.monotonic() > deadline:
                raise StackError(f"the Dagster services for {home} did not come up in {timeout_s:.0f}s")
            time.sleep(0.2)


def _try_lock(path: Path) -> IO | None:
    handle = open(path, "a+")  # noqa: SIM115 -- closed by the caller (or below)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _running_stack_url(home: Path) -> str | None:
    try:
        return json.loads((home / STATE_FILE).read_text())["url"]
    except (FileNotFoundError, ValueError, KeyError):
        return None  # not written yet: its owner is starting it


def _own_stack(home: Path, users: IO, deadline: float) -> Iterator[str]:
    (home / STATE_FILE).unlink(missing_ok=True)  # a dead owner's
    fail_runs_left_by_a_stopped_stack(home)
    workdir = home / STACK_DIR
    workdir.mkdir(exist_ok=True)
    web_port = _free_port()
    commands = stack_commands(workdir, _free_port(), web_port)
    log_path = workdir / "stack.log"
    with log_path.open("ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "wap_pipeline.supervisor", *(json.dumps(c) for c in commands)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "DAGSTER_HOME": str(home)},
        )
    url = f"http://127.0.0.1:{web_port}"
    ready = False
    try:
        _wait_until_ready(DagsterWebserver(url, timeout_s=10), supervisor, deadline, log_path)
        (home / STATE_FILE).write_text(json.dumps({"url": url, "supervisor_pid": supervisor.pid}))
        ready = True
        yield url
    finally:
        if ready:
            fcntl.flock(users, fcntl.LOCK_EX)  # the other users finish first
            _drain(DagsterWebserver(url), log_path)  # and the runs the daemon started meanwhile
        (home / STATE_FILE).unlink(missing_ok=True)
        _stop(supervisor)


def fail_runs_left_by_a_stopped_stack(home: Path) -> list[str]:
    """Mark failed the runs a stack's daemon started that never finished (their stack was stopped, or
    its owner killed, mid-run): no stack serves ``home`` now -- the caller holds the owner lock -- so
    nothing would ever finish them, and a batch whose newest run looks "still going" is never re-driven.

    Runs a headless runner executes in its own process are left to
    :func:`wap_pipeline.runner.fail_orphaned_runs`, which checks that process. One Dagster deployment
    serves a home at a time: a webserver of its own on this home belongs at ``--url``.
    """
    failed = []
    with DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(RunsFilter(statuses=list(_STARTED))):
            if executed_by_a_runner(run.run_id, run.tags):
                continue
            instance.report_run_failed(run, "the Dagster services running it stopped before it finished")
            failed.append(run.run_id)
    return failed


def _drain(api: DagsterWebserver, log_path: Path) -> None:
    """Wait (up to DRAIN_TIMEOUT_S) for the runs the stack's daemon queued or started to finish."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if not api.active_daemon_runs():
                return
        except WebserverError:
            return  # the stack is going anyway
        time.sleep(1.0)
    with log_path.open("a") as log:
        log.write(
            f"stopping with runs still active after {DRAIN_TIMEOUT_S:.0f}s; the next stack fails them\n"
        )


def _wait_until_ready(
    api: DagsterWebserver, supervisor: subprocess.Popen, deadline: float, log_path: Path
) -> None:
    """Until the webserver answers, the code location has loaded and the daemon beats."""
    while True:
        if supervisor.poll() is not None:
            raise StackError(f"the Dagster services exited:\n{log_path.read_text()[-3000:]}")
        if api.reachable():
            try:
                if api.code_location_loaded() and not api.unhealthy_daemons():
                    return
            except WebserverError as error:
                if "failed to load" in str(error):
                    raise StackError(f"{error}\n{log_path.read_text()[-3000:]}") from error
        if time.monotonic() > deadline:
            raise StackError(f"the Dagster services did not come up in time:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)


def _stop(supervisor: subprocess.Popen) -> None:
    """Close the supervisor's stdin (it stops the services); force it if it does not."""
    if supervisor.stdin is not None:
        supervisor.stdin.close()
    try:
        supervisor.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
