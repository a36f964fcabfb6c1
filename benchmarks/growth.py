"""The growth series of ``make bench`` on its own: is a batch's cost independent of history?

Runs ``benchmarks/run.py``'s ``growth_series`` (G batches of E events through the same tables, each
executed with the headless runner's ``launch_run``) against its own local AWS server, and prints every
batch's whole-run and per-stage seconds, plus the verdict ``make bench`` uses (median of the last 3
against the first 3). ``--profile-batches 1,20`` profiles those batches with pyinstrument, so batch #1
and batch #N can be compared call by call.

    .venv/bin/python benchmarks/growth.py                              # 20 x 10,000 events
    .venv/bin/python benchmarks/growth.py --growth-batches 60          # a longer history
    .venv/bin/python benchmarks/growth.py --profile-batches 1,20 --profile-dir /tmp/growth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (benchmarks/run.py, next to this file)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--growth-batches", type=int, default=20)
    parser.add_argument("--growth-events", type=int, default=10_000)
    parser.add_argument("--growth-quarantined", type=int, default=1000)
    parser.add_argument("--profile-batches", default="", help="comma-separated batch numbers to profile")
    parser.add_argument(
        "--cprofile-batches", default="", help="batch numbers to profile with cProfile (call counts)"
    )
    parser.add_argument("--profile-dir", default="/tmp/wap-growth-profile")
    parser.add_argument("--json", help="write the series here")
    return parser.parse_args(argv)


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Every step of the run (assets and checks), STEP_START -> STEP_SUCCESS, from its event log."""
    from dagster import DagsterEventType

    starts, ends = {}, {}
    for entry in instance.all_logs(
        run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    ):
        target = starts if entry.dagster_event.event_type == DagsterEventType.STEP_START else ends
        target[entry.step_key] = entry.timestamp
    return {key: ends[key] - starts[key] for key in starts if key in ends}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.quiet_warnings()
    profiled = {int(n) for n in args.profile_batches.split(",") if n}
    cprofiled = {int(n) for n in args.cprofile_batches.split(",") if n}
    cpu_s: list[float] = []
    original_run_batch = bench.run_batch
    every_step: list[dict[str, float]] = []
    calls = {"n": 0}
    Path(args.profile_dir).mkdir(parents=True, exist_ok=True)

    def run_batch(instance, batch_id):
        calls["n"] += 1
        profiler = None
        if calls["n"] in profiled:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        deterministic = None
        if calls["n"] in cprofiled:
            import cProfile

            deterministic = cProfile.Profile()
            deterministic.enable()
        cpu = time.process_time()
        try:
            result = original_run_batch(instance, batch_id)
        finally:
            cpu_s.append(time.process_time() - cpu)
            if deterministic is not None:
                deterministic.disable()
                deterministic.dump_stats(Path(args.profile_dir) / f"batch{calls['n']:03d}.pstats")
            if profiler is not None:
                profiler.stop()
                out = Path(args.profile_dir) / f"batch{calls['n']:03d}.txt"
                out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
                bench.log(f"profile of batch #{calls['n']} in {out}")
        every_step.append(step_seconds(instance, result["run_id"]))
        return result

    bench.run_batch = run_batch
    with bench.local_server("wap-growth-") as root:
        growth = bench.growth_series(args, root)
    print(f"{'batch':>5} {'whole':>6} {'cpu':>6} " + " ".join(f"{stage:>14}" for stage in bench.STEPS))
    rows = zip(growth["whole_s"], cpu_s, growth["steps_s"], strict=True)
    for number, (whole, cpu, steps) in enumerate(rows, 1):
        print(
            f"{number:>5} {whole:>6.2f} {cpu:>6.2f} "
            + " ".join(f"{steps[stage]:>14.2f}" for stage in bench.STEPS)
        )
    print(
        f"growth: batch #{growth['batches']} / batch #1 = {growth['ratio_last_first']:.2f}x; median of the "
        f"last {growth['median_window']} / first {growth['median_window']} = {growth['ratio_medians']:.2f}x "
        f"({growth['batches']} batches of {growth['events_per_batch']:,} events)"
    )
    first, last = every_step[0], every_step[-1]
    print(f"every step, #1 -> #{len(every_step)} (s):")
    for key in sorted(set(first) | set(last)):
        print(f"  {key:<60} {first.get(key, 0):6.3f} -> {last.get(key, 0):6.3f}")
    steps_total = [sum(s.values()) for s in every_step]
    print(f"sum of steps #1 -> #{len(every_step)}: {steps_total[0]:.2f} -> {steps_total[-1]:.2f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({**growth, "every_step_s": every_step, "cpu_s": cpu_s}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
