"""Failpoints for the tests and the chaos suite: what happens at the pipeline's failure boundaries
(:func:`wap_pipeline.hooks.fault_point`) when the tests' hooks plugin (:mod:`wap_pipeline_tests.hooks`)
is installed.

``WAP_FAULTS`` -- read here, never by the product -- holds ``point=action`` pairs separated by commas, e.g.
``standardized.after_branch_write=kill``. Actions:

* ``raise`` -- raise :class:`InjectedFault` (an ordinary step failure);
* ``kill`` -- SIGKILL this process (a crash: nothing after this point happens, no cleanup);
* ``pause:<path>`` -- create ``<path>.reached``, then wait until ``<path>`` exists (lets a test act
  at exactly this point, e.g. commit to main from another writer).

A point fires at most once per process unless the action is suffixed ``*`` (``raise*``). With
``WAP_FAULTS`` unset every point is a no-op. The specification is read at each point, so a test (or a
chaos worker) can change it between runs in one process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_fired: set[str] = set()


class InjectedFault(RuntimeError):
    """A failure injected through WAP_FAULTS."""


def _configured() -> dict[str, str]:
    spec = os.environ.get("WAP_FAULTS", "").strip()
    if not spec:
        return {}
    pairs = {}
    for item in spec.split(","):
        point, _, action = item.strip().partition("=")
        if point and action:
            pairs[point] = action
    return pairs


def reset() -> None:
    """Forget which points fired: a long-lived process (a chaos worker) runs one scenario after another."""
    _fired.clear()


def fire(name: str) -> None:
    """Do what ``WAP_FAULTS`` says for the point ``name`` (nothing if it names no action)."""
    action = _configured().get(name)
    if action is None:
        return
    repeat = action.endswith("*")
    action = action.rstrip("*")
    if name in _fired and not repeat:
        return
    _fired.add(name)
    if action == "raise":
        raise InjectedFault(f"fault injected at {name}")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("pause:"):
        release = Path(action.split(":", 1)[1])
        Path(f"{release}.reached").touch()
        deadline = time.monotonic() + 300
        while not release.exists():
            if time.monotonic() > deadline:
                raise InjectedFault(f"fault point {name} was never released ({release})")
            time.sleep(0.05)
        return
    raise ValueError(f"unknown fault action {action!r} for {name}")
