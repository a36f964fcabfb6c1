"""`python -m wap_pipeline_tests.chaos --schedules N --seed S [--jobs J]`: run N seeded chaos schedules.

Schedule i uses seed S+i; `--schedules 1 --seed X` reproduces the schedule with seed X on its own.
With ``--jobs J`` the schedules are shared among J worker processes, each with its own local AWS
server (a schedule resets its server, so two schedules never share one); most of a schedule's time is
waiting (backoff, visibility timeouts), so workers overlap well even on two cores.
Exit 0 only if every schedule passed.
"""

from __future__ import annotations

import os

from wap_pipeline_tests import hooks
from wap_pipeline_tests.chaos.schedule import CHAOS_ENV

# Settings read at import time (step retry policies) must see the chaos environment; the failpoints
# (WAP_FAULTS) act through the tests' hooks plugin, in the workers and in the runs they fork.
for _key, _value in CHAOS_ENV.items():
    os.environ.setdefault(_key, _value)
hooks.enable()

import argparse  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from importlib import import_module  # noqa: E402
from pathlib import Path  # noqa: E402

RESULT_PREFIX = "CHAOS-RESULT "


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reproduce_command(seed: int) -> str:
    return f"{sys.executable} -m wap_pipeline_tests.chaos --schedules 1 --seed {seed} -v"


def _worker(seeds: list[int], keep: bool) -> int:
    """Run the given seeds against a server of our own; one JSON result line per schedule."""
    from wap_pipeline import local_stack
    from wap_pipeline.settings import Settings
    from wap_pipeline_tests.chaos.plan import make_plan
    from wap_pipeline_tests.chaos.schedule import run_schedule

    # What a forked run imports (the runner, the definitions), imported once here: every fork then
    # starts with it, and no fork has to take an import lock another thread might hold.
    import_module("wap_pipeline.runner")
    workdir = Path(tempfile.mkdtemp(prefix="wap-chaos-"))
    try:
        server = Settings(local_port=_free_port(), state_dir=str(workdir / "server"))
        local_stack.up(server)

        def stop(signum, frame) -> None:  # interrupted: stop our server now, whatever is running
            local_stack.down(server)
            shutil.rmtree(workdir, ignore_errors=True)
            os._exit(128 + signum)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for seed in seeds:
                plan = make_plan(seed)
                outcome = run_schedule(server, plan, workdir)
                result = {
                    "seed": seed,
                    "passed": outcome.passed,
                    "seconds": round(outcome.seconds, 1),
                    "killed": outcome.killed,
                    "description": outcome.description,
                    "kill_point": plan.kill_point,
                    "throttled": bool(plan.error_rate),
                    "blackout": bool(plan.blackout),
                    "violations": outcome.violations,
                    "transcript": outcome.transcript,
                }
                print(RESULT_PREFIX + json.dumps(result), flush=True)
                if not keep:
                    shutil.rmtree(workdir / f"schedule-{seed}", ignore_errors=True)
        finally:
            local_stack.down(server)
    finally:
        if keep:
            print(f"state kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _report(result: dict, done: int, total: int, verbose: bool) -> None:
    verdict = "ok  " if result["passed"] else "FAIL"
    killed = {True: " killed", False: " kill not reached", None: ""}[result["killed"]]
    print(
        f"[{done:3d}/{total}] seed {result['seed']:<6d} {verdict} {result['seconds']:5.1f}s{killed}  "
        f"{result['description']}",
        flush=True,
    )
    if result["killed"] is False:  # how the faulted runs ended instead (a timeout? nothing to do?)
        faulted = False
        for line in result["transcript"]:
            if line.startswith("$ "):
                faulted = line.startswith("$ WAP_FAULTS=") or "(the second runner)" in line
            # A timed-out run's log tail follows its line, indented.
            if faulted and not verbose and (line.startswith("$ ") or line.startswith("  ")):
                print(f"      {line}", flush=True)
    for violation in result["violations"]:
        print(f"      violation: {violation}", flush=True)
    if verbose or not result["passed"]:
        for line in result["transcript"]:
            print(f"      {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wap_pipeline_tests.chaos", description=__doc__)
    parser.add_argument("--schedules", type=int, default=100, help="how many schedules (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first schedule (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the state directories")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every schedule's transcript")
    parser.add_argument("--worker-seeds", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_seeds is not None:
        return _worker([int(s) for s in args.worker_seeds.split(",") if s], args.keep)

    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    seeds = list(range(args.seed, args.seed + args.schedules))
    jobs = max(1, min(args.jobs, len(seeds)))
    results: queue.Queue = queue.Queue()
    workers = []
    for index in range(jobs):
        share = seeds[index::jobs]
        command = [
            sys.executable,
            "-m",
            "wap_pipeline_tests.chaos",
            "--worker-seeds",
            ",".join(map(str, share)),
        ]
        if args.keep:
            command.append("--keep")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=os.environ.copy(), cwd=Path(__file__).parents[2]
        )
        workers.append((process, share))

        def pump(process=process) -> None:
            for line in process.stdout:
                if line.startswith(RESULT_PREFIX):
                    results.put(json.loads(line[len(RESULT_PREFIX) :]))
            results.put(None)

        threading.Thread(target=pump, daemon=True).start()

    collected: dict[int, dict] = {}
    finished = 0
    try:
        while finished < jobs:
            result = results.get()
            if result is None:
                finished += 1
                continue
            collected[result["seed"]] = result
            _report(result, len(collected), len(seeds), args.verbose)
    finally:
        # Interrupted (Ctrl-C, SIGTERM) or done: workers stop their own servers on SIGTERM.
        for process, _ in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for process, share in workers:
        for seed in share:
            if seed not in collected:  # the worker died before reporting it
                collected[seed] = {
                    "seed": seed,
                    "passed": False,
                    "violations": [f"no result: worker exited {process.returncode}"],
                }
    failures = [collected[s] for s in seeds if not collected[s]["passed"]]
    elapsed = time.monotonic() - started
    print(
        f"\nchaos: {len(seeds) - len(failures)} passed, {len(failures)} failed, {len(seeds)} schedules in "
        f"{elapsed:.0f} s with {jobs} worker(s) (seeds {seeds[0]}..{seeds[-1]})"
    )
    done = [r for r in collected.values() if "description" in r]
    kills: dict[str, int] = {}
    for r in done:
        if r.get("killed"):
            kills[r["kill_point"]] = kills.get(r["kill_point"], 0) + 1
    print(
        f"faults: {sum(kills.values())} runs killed ({', '.join(f'{k} {v}' for k, v in sorted(kills.items()))}; "
        f"{sum(1 for r in done if r.get('killed') is False)} kills planned at a point the run never reached), "
        f"{sum(1 for r in done if r.get('throttled'))} throttled, {sum(1 for r in done if r.get('blackout'))} "
        "blacked out"
    )
    for result in failures:
        print(f"  seed {result['seed']} failed: {'; '.join(result['violations'])[:300]}")
        print(f"    reproduce: {reproduce_command(result['seed'])}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
