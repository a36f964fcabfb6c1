"""Run the project's console scripts as a user would: a subprocess with the test's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(
    script: str,
    args: tuple[str, ...],
    check: bool,
    timeout: float,
    env: dict[str, str],
    clock_offset: str | None = None,
) -> subprocess.CompletedProcess:
    # A shifted clock is the process's real clock, moved by libfaketime (Debian's `faketime`).
    shift = ["faketime", "-f", clock_offset] if clock_offset else []
    result = subprocess.run(
        [*shift, str(BIN / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def run_cli(
    *args: str,
    check: bool = True,
    timeout: float = 900,
    env: dict[str, str] | None = None,
    clock_offset: str | None = None,
) -> subprocess.CompletedProcess:
    """`wap-pipeline ARGS`, with ``env`` added to the test's environment; ``clock_offset`` (e.g.
    ``+5d``) runs it with the process clock shifted by that much."""
    return _run("wap-pipeline", args, check, timeout, env or {}, clock_offset)


def patcher(
    *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`data-patcher ARGS`, acting as operator support-bob."""
    return _run("data-patcher", args, check, timeout, {"WAP_OPERATOR": "support-bob", **(env or {})})


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`wap-pipeline ARGS` in the background (stdout and stderr merged, as text)."""
    return subprocess.Popen(
        [str(BIN / "wap-pipeline"), *args],
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
