"""`make bench-spark`: the Spark engine on a local standalone cluster, against the floor of the same run.

For each batch size (default 1,000,000 and 3,000,000 events) in one run: the landing batch is
generated and put in S3 (the project's local AWS server, as ``benchmarks/run.py`` does), its floor is
measured (``pyarrow.json.read_json`` + ``pyarrow.parquet.write_table`` of the same NDJSON), and the
pipeline job runs it with ``WAP_ENGINE=spark`` against a standalone master + worker started here
(``wap_pipeline.engines.standalone``): raw append in-process (PyIceberg, not the engine's), then
standardized, curated, curated's uniqueness check and the daily totals on Spark, the rules in the
worker's executors.

Reported per size:

* whole batch: the run's wall time, and its ratio to the floor measured in this run;
* per stage: seconds (the run's STEP_START -> STEP_SUCCESS events), curated's two blocking checks
  included (steps of their own, ``STEPS`` in ``run.py``);
* driver peak RSS: the Python driver process (high-water mark reset before the run, and a 50 ms
  sampler for each stage's peak) and the driver JVM (its high-water mark, reset likewise, via /proc).
  Each size runs in a process of its own, and the batch is generated, landed and floor-measured in a
  child process, so the driver's numbers are the run's, not the harness's;
  the standardized + curated peaks are the Spark engine's driver, the raw stage is not the engine's;
* executor time: the sum of the executors' task run time and CPU time over the run's stages (the
  driver's REST API, ``/api/v1/applications/<id>/stages``).

    python benchmarks/spark.py                                  # 1M and 3M events (~15 min on 2 cores)
    python benchmarks/spark.py --events 20000,60000             # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (benchmarks/run.py, next to this file)

RESULTS = Path(__file__).resolve().parent / "results"
ENGINE_STAGES = ("standardized", "curated", "keys unique check", "daily totals")
"""The pipeline steps the Spark engine computes (raw append is PyIceberg in the driver for both engines;
curated's row accounting check reads snapshot summaries only)."""


def _proc_peak_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        if match:
            return int(match.group(1)) / 1024
    return 0.0


def _proc_reset(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rest(ui: str, path: str):
    with urllib.request.urlopen(f"{ui}/api/v1/applications/{path}", timeout=10) as response:
        return json.load(response)


def executor_time(ui: str, app_id: str, since_stage: int) -> dict:
    """Executor task time of the stages after ``since_stage`` (this run's)."""
    stages = [s for s in _rest(ui, f"{app_id}/stages") if s["stageId"] > since_stage]
    return {
        "stages": len(stages),
        "tasks": sum(s.get("numCompleteTasks", 0) for s in stages),
        "executor_run_s": sum(s.get("executorRunTime", 0) for s in stages) / 1000,
        "executor_cpu_s": sum(s.get("executorCpuTime", 0) for s in stages) / 1e9,
    }


def last_stage(ui: str, app_id: str) -> int:
    return max((s["stageId"] for s in _rest(ui, f"{app_id}/stages")), default=-1)


def land_and_measure_floor(name: str, events: int, quarantined: int, root: Path) -> tuple[dict, dict]:
    """Generate and land the batch, and measure its floor (run in a child process of its own)."""
    from wap_pipeline import aws
    from wap_pipeline.settings import Settings

    bench.quiet_warnings()
    settings = Settings.from_env()
    bench.log(f"{name}: generating and landing {events:,} events")
    ndjson = root / f"{name}.ndjson"
    landed = bench.land_events(aws.client("s3", settings), settings, events, 1, quarantined, ndjson)
    bench.log(f"{name}: floor (read_json + write_table)")
    floor = bench.measure_floor(ndjson, root / "floor.parquet")
    ndjson.unlink()
    (root / "floor.parquet").unlink()
    return landed.__dict__, floor


def one_size(events: int, quarantined: int, root: Path) -> dict:
    """Land, measure the floor, run the pipeline job on Spark for one batch of ``events``."""
    from dagster import DagsterInstance

    from wap_pipeline import aws
    from wap_pipeline.engines import spark as spark_engine
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import create_tables
    from wap_pipeline.ingest.landing import LandingCursor
    from wap_pipeline.provision import provision
    from wap_pipeline.settings import Settings
    from wap_pipeline.state import ensure_dagster_home

    name = f"spark{events}"
    out: dict = {"events": events}
    with mock.patch.dict(os.environ, bench.scenario_env(root, name, WAP_ENGINE="spark")):
        settings = Settings.from_env()
        provision(settings)
        ensure_dagster_home(settings)
        # In a child process: generating and parsing the batch would otherwise stay in this (the
        # driver's) memory, and the driver's high-water mark would measure the harness, not the run.
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
            out["batch"], out["floor"] = child.submit(
                land_and_measure_floor, name, events, quarantined, root
            ).result()
        bench.load_quarantine(aws.client("dynamodb", settings), settings.quarantine_table, quarantined)
        tables = create_tables(load_wap_catalog(settings))
        session = spark_engine.spark_session(settings)  # this catalog's session on the running context
        context = session.sparkContext
        ui, app_id = context.uiWebUrl, context.applicationId
        jvm_pid = int(context._jvm.java.lang.ProcessHandle.current().pid())
        since = last_stage(ui, app_id)
        with DagsterInstance.get() as instance:
            batch_ids, _ = bench.register_batches(instance, settings, LandingCursor())
            if len(batch_ids) != 1:
                raise RuntimeError(f"expected one batch, landing discovery made {batch_ids}")
            bench.log(f"{name}: pipeline run (WAP_ENGINE=spark) for batch {batch_ids[0]}")
            bench.PeakRss.reset()
            _proc_reset(jvm_pid)
            with bench.RssSampler() as sampler:
                run = bench.run_batch(instance, batch_ids[0])
            out["driver_python_peak_mb"] = bench.PeakRss.peak_mb()
            out["driver_jvm_peak_mb"] = _proc_peak_mb(jvm_pid)
            out["stage_python_peak_mb"] = {
                stage: sampler.peak_between(*window) for stage, window in run["windows"].items()
            }
            # Python does not give memory back: a stage's peak includes what the stages before it
            # left. What a stage itself adds is its peak over the RSS it started with.
            out["stage_python_rise_mb"] = {
                stage: sampler.peak_between(*window)
                - next((rss for at, rss in sampler.samples if at >= window[0]), 0.0)
                for stage, window in run["windows"].items()
            }
        out["run"] = {k: v for k, v in run.items() if k != "windows"}
        out["executors"] = executor_time(ui, app_id, since)
        for layer in ("raw", "standardized", "curated"):
            tables[layer].refresh()
        out["rows"] = {
            layer: bench.current_records(tables[layer]) for layer in tables if layer != "daily_totals"
        }
        if out["rows"]["raw"] != events or not out["rows"]["standardized"] == out["rows"]["curated"] > 0:
            raise RuntimeError(f"rows do not add up after the run: {out['rows']}")
    return out


def report(results: dict) -> list[str]:
    cluster = results["cluster"]
    lines = [
        f"wap-pipeline Spark benchmark {results['started_at']}: {results['environment']}",
        f"cluster: standalone master + 1 worker on 127.0.0.1 ({cluster['cores']} cores, {cluster['memory']}); "
        f"driver: spark.driver.memory={cluster['driver_memory']}, executor memory {cluster['executor_memory']}",
    ]
    for size in results["sizes"]:
        n, floor_s, run = size["events"], size["floor"]["seconds"], size["run"]
        steps = run["steps"]
        ex = size["executors"]
        peaks, rises = size["stage_python_peak_mb"], size["stage_python_rise_mb"]
        spark_s = sum(steps[stage] for stage in ENGINE_STAGES)
        lines += [
            f"{n:,} events ({size['batch']['bytes'] / 1e6:,.1f} MB NDJSON, {size['rows']['standardized']:,} "
            f"standardized rows):",
            f"  floor: {floor_s:.2f} s (read_json {size['floor']['read_json_s']:.2f} s + write_table "
            f"{size['floor']['write_table_s']:.2f} s)",
            f"  whole batch: {run['whole batch']:.2f} s, {run['whole batch'] / floor_s:.2f}x floor "
            f"(raw append {steps['raw append']:.2f} s, standardized {steps['standardized']:.2f} s, "
            f"curated {steps['curated']:.2f} s, checks {steps['keys unique check']:.2f} + "
            f"{steps['row accounting check']:.2f} s, daily totals {steps['daily totals']:.2f} s)",
            f"  Spark stages only ({' + '.join(ENGINE_STAGES)}): {spark_s:.2f} s, "
            f"{spark_s / floor_s:.2f}x floor",
            f"  driver peak RSS: Python {size['driver_python_peak_mb']:,.0f} MB (by stage: "
            + ", ".join(f"{stage} {peaks[stage]:,.0f}" for stage in peaks)
            + "; added by the stage itself: "
            + ", ".join(f"{stage} {rises[stage]:+,.0f}" for stage in rises)
            + f"), JVM {size['driver_jvm_peak_mb']:,.0f} MB",
            f"  executor time: {ex['executor_run_s']:.1f} s run, {ex['executor_cpu_s']:.1f} s CPU in "
            f"{ex['tasks']} tasks of {ex['stages']} stages",
        ]
    if len(results["sizes"]) > 1:
        first, last = results["sizes"][0], results["sizes"][-1]

        def engine_rise(size: dict) -> float:
            return max(size["stage_python_rise_mb"][stage] for stage in ENGINE_STAGES)

        lines.append(
            f"driver growth {first['events']:,} -> {last['events']:,} events "
            f"({last['events'] / first['events']:.1f}x the batch): Python added by the Spark stages "
            f"{engine_rise(first):+,.0f} -> {engine_rise(last):+,.0f} MB, driver JVM peak "
            f"{first['driver_jvm_peak_mb']:,.0f} -> {last['driver_jvm_peak_mb']:,.0f} MB, whole Python "
            f"process peak {first['driver_python_peak_mb']:,.0f} -> {last['driver_python_peak_mb']:,.0f} MB "
            f"({last['driver_python_peak_mb'] / first['driver_python_peak_mb']:.2f}x; each size in a driver "
            "process of its own)"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", default="1000000,3000000", help="comma-separated batch sizes")
    parser.add_argument("--quarantined", type=int, default=1000, help="quarantined ids in DynamoDB")
    parser.add_argument("--cores", type=int, default=2, help="the worker's cores")
    parser.add_argument("--worker-memory", default="3g")
    parser.add_argument("--executor-memory", default="2g")
    parser.add_argument("--driver-memory", default="1g")
    parser.add_argument("--json", default=str(RESULTS / "spark-latest.json"), help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    return parser.parse_args(argv)


def write_results(results: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=1, default=str))


def finish(results: dict, args: argparse.Namespace) -> int:
    """Print the whole report and write the results."""
    lines = report(results)
    lines.append(f"bench-spark: {results['total_s']:.0f} s in all; results in {args.json}")
    print("\n".join(lines))
    write_results(results, args.json)
    return 0


def each_size_in_its_own_driver(args: argparse.Namespace) -> int:
    """Run every size in a fresh process (cluster and driver of its own), then report them together:
    a driver that ran the smaller batch first would start the larger one with what that left behind."""
    started = time.perf_counter()
    sizes = []
    for events in args.events.split(","):
        out = Path(tempfile.mkdtemp(prefix="wap-bench-spark-size-")) / "result.json"
        settings = [
            *("--quarantined", str(args.quarantined), "--cores", str(args.cores)),
            *("--worker-memory", args.worker_memory, "--executor-memory", args.executor_memory),
            *("--driver-memory", args.driver_memory, *(["--keep"] if args.keep else [])),
        ]
        subprocess.run(
            [sys.executable, __file__, *settings, "--events", events, "--json", str(out)], check=True
        )
        results = json.loads(out.read_text())
        sizes += results["sizes"]
    results = {**results, "sizes": sizes, "total_s": time.perf_counter() - started, "args": vars(args)}
    return finish(results, args)


def main(argv: list[str] | None = None) -> int:
    from wap_pipeline.engines import spark as spark_engine
    from wap_pipeline.engines.standalone import SparkCluster, free_port

    args = parse_args(argv)
    if "," in args.events:
        return each_size_in_its_own_driver(args)
    bench.quiet_warnings()
    started = time.perf_counter()
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "environment": bench._environment(),
        "cluster": {
            "cores": args.cores,
            "memory": args.worker_memory,
            "executor_memory": args.executor_memory,
            "driver_memory": args.driver_memory,
        },
        "sizes": [],
    }
    cluster_root = Path(tempfile.mkdtemp(prefix="wap-bench-spark-cluster-"))
    with (
        bench.local_server("wap-bench-spark-", keep=args.keep) as root,
        SparkCluster(cluster_root, cores=args.cores, memory=args.worker_memory) as cluster,
    ):
        bench.log(f"standalone Spark cluster at {cluster.url} (logs in {cluster_root})")
        os.environ["WAP_SPARK_MASTER"] = cluster.url
        # The process's SparkContext, made once with its UI on (the executor times come from its REST
        # API); every scenario's catalog gets a session on it.
        from wap_pipeline.settings import Settings

        with mock.patch.dict(os.environ, bench.scenario_env(root, "spark-context")):
            spark_engine.spark_session(
                Settings.from_env(),
                {
                    "spark.ui.enabled": "true",
                    "spark.ui.port": str(free_port()),
                    "spark.driver.memory": args.driver_memory,
                    "spark.executor.memory": args.executor_memory,
                },
            )
        try:
            for events in (int(n) for n in args.events.split(",")):
                results["sizes"].append(one_size(events, args.quarantined, root))
                # Each size as soon as it is measured (a later, larger one may not finish).
                print("\n".join(report({**results, "sizes": results["sizes"][-1:]})[2:]), flush=True)
                write_results(results, args.json)
        finally:
            spark_engine.stop_spark()
    results["total_s"] = time.perf_counter() - started
    return finish(results, args)


if __name__ == "__main__":
    sys.exit(main())
