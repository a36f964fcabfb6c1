"""`python -m wap_pipeline_tests.chaos --schedules N --seed S`: run N seeded chaos schedules.

Schedule i uses seed S+i; `--schedules 1 --seed X` reproduces the schedule with seed X on its own.
Exit 0 only if every schedule passed.
"""

from __future__ import annotations

import os

from wap_pipeline_tests.chaos.schedule import CHAOS_ENV

# Settings read at import time (step retry policies) must see the chaos environment.
for _key, _value in CHAOS_ENV.items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from wap_pipeline import local_stack  # noqa: E402
from wap_pipeline.settings import Settings  # noqa: E402
from wap_pipeline_tests.chaos.plan import make_plan  # noqa: E402
from wap_pipeline_tests.chaos.schedule import run_schedule  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wap_pipeline_tests.chaos", description=__doc__)
    parser.add_argument("--schedules", type=int, default=100, help="how many schedules (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first schedule (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the state directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every schedule's transcript")
    args = parser.parse_args(argv)

    started = time.monotonic()
    failures = []
    workdir = Path(tempfile.mkdtemp(prefix="wap-chaos-"))
    try:
        server = Settings(local_port=_free_port(), state_dir=str(workdir / "server"))
        local_stack.up(server)
        try:
            for number in range(args.schedules):
                seed = args.seed + number
                plan = make_plan(seed)
                outcome = run_schedule(server, plan, workdir)
                verdict = "ok  " if outcome.passed else "FAIL"
                killed = {True: " killed", False: " kill not reached", None: ""}[outcome.killed]
                print(
                    f"[{number + 1:3d}/{args.schedules}] seed {seed:<6d} {verdict} {outcome.seconds:5.1f}s"
                    f"{killed}  {outcome.description}",
                    flush=True,
                )
                if not outcome.passed:
                    failures.append(outcome)
                    for violation in outcome.violations:
                        print(f"      violation: {violation}", flush=True)
                if args.verbose or not outcome.passed:
                    for line in outcome.transcript:
                        print(f"      {line}", flush=True)
        finally:
            local_stack.down(server)
    finally:
        if args.keep:
            print(f"state kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    passed = args.schedules - len(failures)
    print(
        f"\nchaos: {passed} passed, {len(failures)} failed, {args.schedules} schedules in {elapsed:.0f} s "
        f"(seeds {args.seed}..{args.seed + args.schedules - 1})"
    )
    for outcome in failures:
        print(
            f"  seed {outcome.seed} failed; reproduce: "
            f"{sys.executable} -m wap_pipeline_tests.chaos --schedules 1 --seed {outcome.seed} -v"
        )
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
