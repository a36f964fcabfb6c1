"""The local AWS server: moto in server mode, as a process of its own on 127.0.0.1.

The project starts it, waits until it answers, and stops it by PID. moto comes with the ``local``
extra (``make install`` installs it); on AWS it is not needed. It keeps no state across a
restart, so ``up`` never restarts a server that answers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wap_pipeline.settings import Settings


class LocalStackError(RuntimeError):
    """The local server could not be started or reached."""


@dataclass(frozen=True)
class LocalStackStatus:
    running: bool
    pid: int | None
    endpoint: str

    def describe(self) -> str:
        if self.running:
            return f"local AWS server running (pid {self.pid}) at {self.endpoint}"
        return f"local AWS server not running (expected at {self.endpoint})"


def _pid_file(settings: Settings) -> Path:
    return settings.state_path / f"moto-{settings.local_port}.pid"


def _log_file(settings: Settings) -> Path:
    return settings.state_path / f"moto-{settings.local_port}.log"


def answers(endpoint: str, timeout: float = 2.0) -> bool:
    """True when moto's dashboard page answers at ``endpoint`` (cheap, unlike its data dump)."""
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _read_pid(settings: Settings) -> int | None:
    try:
        pid = int(_pid_file(settings).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def status(settings: Settings) -> LocalStackStatus:
    return LocalStackStatus(
        running=answers(settings.local_endpoint), pid=_read_pid(settings), endpoint=settings.local_endpoint
    )


def _wait_until_answers(endpoint: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(endpoint):
            return True
        time.sleep(0.2)
    return False


def up(settings: Settings, timeout_s: float = 30.0) -> LocalStackStatus:
    """Start the server unless one already answers on the port; wait until it answers."""
    current = status(settings)
    if current.running:
        return current
    if current.pid is not None:
        # Our server is alive but busy: wait for it rather than starting a second one on the port.
        if _wait_until_answers(settings.local_endpoint, timeout_s):
            return status(settings)
        raise LocalStackError(f"local AWS server (pid {current.pid}) is alive but does not answer")
    if importlib.util.find_spec("moto") is None:
        raise LocalStackError(
            "the local AWS server needs moto: install the `local` extra (pip install 'wap-pipeline[local]'; "
            "`make install` does)"
        )
    settings.state_path.mkdir(parents=True, exist_ok=True)
    log = _log_file(settings).open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(settings.local_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalStackError(
                f"local AWS server exited with code {process.returncode} (is port {settings.local_port} "
                f"taken by another process? set WAP_LOCAL_PORT); see {_log_file(settings)}"
            )
        if answers(settings.local_endpoint):
            _pid_file(settings).write_text(str(process.pid))
            return LocalStackStatus(True, process.pid, settings.local_endpoint)
        time.sleep(0.2)
    process.kill()
    raise LocalStackError(
        f"local AWS server did not answer within {timeout_s:.0f}s at {settings.local_endpoint}"
    )


def down(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Stop the server we started (by PID). Returns False when none was running."""
    pid = _read_pid(settings)
    _pid_file(settings).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # our child: reap it
    return True


def _exited(pid: int) -> bool:
    """Whether the server process is gone. When this process started it (the test suite, the chaos
    harness, the benchmarks), it is our child: reap it, or it stays a zombie that ``kill(pid, 0)``
    still finds."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:  # not our child (started by an earlier `wap-pipeline local up`)
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def reset(settings: Settings) -> None:
    """Wipe every resource of the local server (tests use it between cases)."""
    request = urllib.request.Request(f"{settings.local_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
