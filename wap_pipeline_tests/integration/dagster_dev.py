"""A real `dagster dev` (webserver + daemon + code server) for tests, started and killed by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from wap_pipeline_tests.conftest import free_port
from wap_pipeline_tests.integration.cli import BIN


@contextmanager
def dagster_dev(log_path: Path, startup_timeout_s: float = 120.0) -> Iterator[str]:
    """Start `wap-pipeline dev` on a free port; yield its URL once /server_info answers.

    It runs in its own session and is killed by process group: started in the background,
    `dagster dev` ignores SIGTERM, and its children would outlive it.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(BIN / "wap-pipeline"), "dev", "--port", str(port)],
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"dagster dev exited {process.returncode}: {log_path.read_text()[-3000:]}"
                    )
                try:
                    if requests.get(f"{url}/server_info", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dagster dev did not answer in {startup_timeout_s}s")
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
