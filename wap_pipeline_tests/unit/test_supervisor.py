"""The supervisor stops every service it started -- grandchildren included -- when its starter is done,
when its starter dies by kill -9, or when one of the services exits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# A service that starts a grandchild (as the code server starts run workers) and records both pids.
SERVICE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _service(tmp_path: Path, name: str) -> tuple[list[str], Path]:
    pids = tmp_path / f"{name}.pids"
    return [sys.executable, "-c", SERVICE, str(pids)], pids


def _pids(path: Path, timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def _all_gone(pids: list[int], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _supervisor(commands: list, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wap_pipeline.supervisor", *(json.dumps(c) for c in commands)],
        start_new_session=True,
        **kwargs,
    )


def test_closing_its_stdin_stops_the_services_and_what_they_started(tmp_path):
    (first, first_pids), (second, second_pids) = _service(tmp_path, "a"), _service(tmp_path, "b")
    supervisor = _supervisor([first, second], stdin=subprocess.PIPE)
    pids = _pids(first_pids) + _pids(second_pids)
    assert all(_alive(p) for p in pids)
    supervisor.stdin.close()
    supervisor.wait(timeout=30)
    assert _all_gone(pids)


def test_a_service_that_exits_takes_the_others_down(tmp_path):
    service, pids_file = _service(tmp_path, "a")
    supervisor = _supervisor(
        [service, [sys.executable, "-c", "import time; time.sleep(1)"]], stdin=subprocess.PIPE
    )
    pids = _pids(pids_file)
    supervisor.wait(timeout=30)
    assert _all_gone(pids)


def test_a_starter_killed_by_sigkill_takes_the_services_down(tmp_path):
    service, pids_file = _service(tmp_path, "a")
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-m', 'wap_pipeline.supervisor', sys.argv[1]], "
            "stdin=subprocess.PIPE, start_new_session=True); time.sleep(300)",
            json.dumps(service),
        ]
    )
    pids = _pids(pids_file)
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait()
    assert _all_gone(pids)


def test_the_next_service_starts_once_the_previous_ones_port_listens(tmp_path):
    """The webserver and the daemon load the workspace once: the code server must be listening first."""
    order = tmp_path / "order"
    server = (
        "import socket, sys, time; time.sleep(1); s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
        "s.listen(); open(sys.argv[2], 'a').write('listening\\n'); time.sleep(300)"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    supervisor = _supervisor(
        [
            {"argv": [sys.executable, "-c", server, str(port), str(order)], "port": port},
            [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('next\\n')", str(order)],
        ],
        stdin=subprocess.PIPE,
    )
    supervisor.wait(timeout=30)  # the second exits at once, which stops the first
    assert order.read_text().splitlines() == ["listening", "next"]
