"""Run a few commands as one unit that dies with the process that started it.

``python -m wap_pipeline.supervisor '<json>' ['<json>' ...]`` starts each command, in order, and stops
them all (SIGTERM, then SIGKILL of the whole process group after a grace period) when

* its stdin reaches end of file -- the starter keeps a pipe open and closes it when done, and the
  kernel closes it when the starter dies, ``kill -9`` included: services never outlive their user;
* any command exits -- a stack with a dead member is not a stack;
* it gets SIGTERM or SIGINT.

Each argument is a command's argv as a JSON list, or ``{"argv": [...], "port": N}``: the next command
starts once ``127.0.0.1:N`` accepts connections (a server the next one connects to at start).

Standard library only, so it starts in milliseconds. The starter puts it in a session of its own,
so the final ``killpg`` reaches everything the commands started (run workers included) and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

GRACE_S = 10.0


def _until_stdin_closes(stop: threading.Event) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        stop.set()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _start(commands: list, children: list[subprocess.Popen], stop: threading.Event) -> bool:
    """Start the commands in order, each after its predecessor's port (if any) listens."""
    for command in commands:
        argv, port = (command["argv"], command.get("port")) if isinstance(command, dict) else (command, None)
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        children.append(child)
        while port is not None and not _listening(port):
            time.sleep(0.1)
            if stop.is_set() or child.poll() is not None:
                return False
    return True


def supervise(commands: list) -> int:
    """Run ``commands`` until one exits, stdin closes or a signal arrives; then stop them all."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=_until_stdin_closes, args=(stop,), daemon=True).start()
    children: list[subprocess.Popen] = []
    _start(commands, children, stop)
    code = 0
    # Plain sleeps, never a timed wait on a lock: under libfaketime (the suite's shifted clocks) a
    # timed wait gets a deadline on the faked clock and the kernel waits it out on the real one.
    while not stop.is_set():
        time.sleep(0.2)
        exited = next((child for child in children if child.poll() is not None), None)
        if exited is not None:
            print(f"supervisor: {exited.args[0]} exited {exited.returncode}; stopping the others", flush=True)
            code = 1
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + GRACE_S
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.0, deadline - time.monotonic()))
    sys.stdout.flush()
    if os.getpgid(0) == os.getpid():  # leader of our own group: stragglers, grandchildren, and us
        os.killpg(os.getpid(), signal.SIGKILL)
    for child in children:
        child.kill()
    return code


if __name__ == "__main__":
    sys.exit(supervise([json.loads(argument) for argument in sys.argv[1:]]))
