"""`make bench`: the pipeline against the physical floor on this machine, in one run.

Everything runs against the project's own local AWS server (moto, started here on a free port and
reached through ``AWS_ENDPOINT_URL``) and real Iceberg tables in a SQLite catalog in a temporary
directory. Every ratio is computed from figures measured in this same run (the machine is shared
and noisy, so figures from different runs do not compare).

* floor:     ``pyarrow.json.read_json`` + ``pyarrow.parquet.write_table`` of the generated landing
             batch (N events in the landing-file format the forwarder writes: one envelope per line
             with the message body verbatim).
* stages:    raw append, standardized (quarantine filter with Q quarantined ids in DynamoDB,
             validation, branch write, audit, publish) and curated, as the pipeline job runs them:
             the batch is registered as a partition and executed with the headless runner's
             ``launch_run`` (in-process executor, as the sensors' runs are). Per-stage seconds are
             read from the run's own step events; ``whole batch`` is the run's wall time.
* peak RSS:  the high-water mark of this process during the pipeline run (reset just before it).
* WAP:       write-audit-publish of the batch's standardized rows (create branch, branch write,
             audit scan, fast-forward) vs a plain append of the same rows to main, on twin tables.
* growth:    G smaller batches through the same tables; batch #1 vs batch #G.
* ingest:    the forwarder (receive, parse, PutRecordBatch, delete) vs bare receive+delete calls
             against the same server, same message count and queue depth.
* latency:   send a small batch, drive the sensors with the headless runner, until it is in curated.

    python benchmarks/run.py                      # 1,000,000 events (under 10 minutes on 2 cores)
    python benchmarks/run.py --events 2000 --json /tmp/bench.json
    python benchmarks/run.py --profile benchmarks/results/profile   # pyinstrument on the main run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import orjson
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS_PER_FILE = 5_000  # a landing file: one Firehose object (real Firehose buffers up to 64 MB)
QUARANTINED_SHARE = 100  # every 100th event carries a quarantined id (1 %)
TARGETS = {
    "whole_batch_x_floor": 3.0,
    "wap_overhead_x": 1.3,
    "growth_x": 1.2,
    "peak_rss_mb": 2048.0,
    "ingest_x_server": 0.5,
}
STEPS = {
    "raw append": "raw__events",
    "standardized": "standardized__events",
    "curated": "curated__events",
    # curated's blocking checks, steps of their own (Dagster names them <asset>_<check>): the
    # uniqueness check reads the batch's whole dedup window, so its time and peak are measured.
    "keys unique check": "curated__events_keys_unique_in_window",
    "row accounting check": "curated__events_row_accounting",
    # Recomputes the days the batch touched from curated: reported so its time and peak are measured.
    "daily totals": "curated__daily_totals",
}


# --- environment -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scenario_env(root: Path, name: str, **extra: str) -> dict[str, str]:
    """Own catalog, warehouse, Dagster instance and landing prefixes for one scenario."""
    state = root / name
    state.mkdir(parents=True, exist_ok=True)
    return {
        "WAP_STATE_DIR": str(state),
        "DAGSTER_HOME": str(state / "dagster_home"),
        "WAP_QUEUE_NAME": f"{name}-events",
        "WAP_DLQ_NAME": f"{name}-events-dlq",
        "WAP_STREAM_NAME": f"{name}-stream",
        "WAP_LANDING_PREFIX": f"{name}/landing/",
        "WAP_MANIFESTS_PREFIX": f"{name}/batches/",
        "WAP_BREAKER_TABLE": f"{name}-breaker",
        "WAP_QUARANTINE_TABLE": f"{name}-quarantine",
        "WAP_AUDIT_TABLE": f"{name}-audit",
        **extra,
    }


class PeakRss:
    """Peak resident set size of this process since :meth:`reset` (Linux ``clear_refs``)."""

    @staticmethod
    def reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def peak_mb() -> float:
        with contextlib.suppress(OSError):
            match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
            if match:
                return int(match.group(1)) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Resident set size of this process every ``interval`` seconds, to find each stage's peak."""

    def __init__(self, interval: float = 0.05):
        import threading

        self.samples: list[tuple[float, float]] = []
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        statm = Path("/proc/self/statm")
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                self.samples.append((time.time(), int(statm.read_text().split()[1]) * self._page_mb))
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> float:
        return max((rss for at, rss in self.samples if start <= at <= end), default=0.0)


@dataclass
class Timings:
    """Seconds spent in named functions of the real code path, recorded while a run executes."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def wrap(self, owner: object, attribute: str, label: str) -> Callable[[], None]:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, original)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


# --- data ------------------------------------------------------------------------------------------


def quarantined_id(number: int) -> str:
    return f"evt_q{number:09d}"


def landing_lines(count: int, rng: random.Random, quarantined: int) -> Iterator[bytes]:
    """Landing lines exactly as the forwarder writes them for messages `send` would have sent.

    Events have the shape and value ranges of :func:`wap_pipeline.events.make_event` but are made
    about ten times faster (a million of them must not eat the time budget): ids from one
    ``getrandbits`` each, timestamps from a pool of 2,048. The landing record of every
    500th message is checked against the forwarder's own :func:`to_landing_record`.
    """
    from wap_pipeline.events import CURRENCIES, EVENT_TYPES, make_event
    from wap_pipeline.rules.envelope import landing_line, to_landing_record

    now = datetime.now(UTC)
    sent_ms = int(now.timestamp() * 1000)
    stamps = [make_event(rng, now)["event_timestamp"] for _ in range(2048)]
    shape = set(make_event(rng, now))
    for number in range(count):
        key = f"{rng.getrandbits(128):032x}"
        bits = rng.getrandbits(64)  # one draw for the small fields
        event_type = EVENT_TYPES[bits % len(EVENT_TYPES)]
        amount = 100 + (bits >> 8) % 499_901
        event = {
            "event_id": f"evt_{rng.getrandbits(128):032x}",
            "idempotency_key": f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}",
            "event_type": event_type,
            "event_timestamp": stamps[(bits >> 32) % 2048],
            "account_id": f"acct_{1 + (bits >> 44) % 5000:05d}",
            "amount_minor": -amount if event_type == "payment.refunded" else amount,
            "currency": CURRENCIES[(bits >> 58) % len(CURRENCIES)],
        }
        if quarantined and number % QUARANTINED_SHARE == 0:
            event["event_id"] = quarantined_id(rng.randrange(quarantined))
        message_id = f"{rng.getrandbits(128):032x}"
        message_id = (
            f"{message_id[:8]}-{message_id[8:12]}-{message_id[12:16]}-{message_id[16:20]}-{message_id[20:]}"
        )
        body = orjson.dumps(event).decode()
        record = {
            "message_id": message_id,
            "original_message_id": message_id,
            "idempotency_key": event["idempotency_key"],
            "is_replay": False,
            "sent_timestamp": sent_ms + number // 100,
            "receive_count": 1,
            "body": body,
        }
        if number % 500 == 0:
            message = {
                "MessageId": message_id,
                "ReceiptHandle": "-",
                "Body": body,
                "Attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": str(record["sent_timestamp"]),
                },
                "MessageAttributes": {},
            }
            if set(event) != shape or to_landing_record(message) != record:
                raise AssertionError(f"generated landing record differs from the forwarder's: {record}")
        yield landing_line(record)


def firehose_key(prefix: str, stream: str) -> str:
    now = datetime.now(UTC)
    return f"{prefix}{now:%Y/%m/%d/%H}/{stream}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"


@dataclass
class LandedBatch:
    events: int
    files: int
    bytes: int
    body_bytes: int


def land_events(
    s3, settings, events: int, seed: int, quarantined: int, local_copy: Path | None = None
) -> LandedBatch:
    """Put ``events`` landing lines into S3 as Firehose objects of up to EVENTS_PER_FILE lines."""
    rng = random.Random(seed)
    lines = landing_lines(events, rng, quarantined)
    files = max(1, min(settings.batch_max_files, math.ceil(events / EVENTS_PER_FILE)))
    per_file = math.ceil(events / files)
    total = 0
    body_sample: list[int] = []
    sink = local_copy.open("wb") if local_copy is not None else None
    try:
        for _ in range(files):
            chunk = [line for _, line in zip(range(per_file), lines, strict=False)]
            if not chunk:
                break
            body_sample += [len(orjson.loads(line)["body"]) for line in chunk[:100]]
            data = b"".join(chunk)
            s3.put_object(
                Bucket=settings.landing_bucket,
                Key=firehose_key(settings.landing_prefix, settings.stream_name),
                Body=data,
            )
            if sink is not None:
                sink.write(data)
            total += len(data)
    finally:
        if sink is not None:
            sink.close()
    body_total = int(statistics.mean(body_sample) * events)
    return LandedBatch(events, files, total, body_total)


def load_quarantine(dynamodb, table: str, count: int, threads: int = 4) -> float:
    """Put ``count`` quarantined ids (setup, not measured: a few client threads overlap the calls)."""
    from concurrent.futures import ThreadPoolExecutor

    from wap_pipeline import aws

    def put(start: int) -> None:
        requests = [
            {"PutRequest": {"Item": aws.to_item({"record_id": quarantined_id(i), "reason": "bench"})}}
            for i in range(start, min(start + 25, count))
        ]
        pending = {table: requests}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(0, count, 25)))
    return time.perf_counter() - started


# --- measurements ----------------------------------------------------------------------------------


def measure_floor(path: Path, out: Path, repeat: int = 2) -> dict[str, float]:
    """read_json + write_table of the landing batch; best of ``repeat``."""
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        table = pj.read_json(path)
        read = time.perf_counter() - started
        pq.write_table(table, out)
        total = time.perf_counter() - started
        rows = table.num_rows
        del table
        if best is None or total < best["seconds"]:
            best = {"seconds": total, "read_json_s": read, "write_table_s": total - read, "rows": rows}
    return best


def register_batches(instance, settings, cursor):
    """What landing_sensor does: discover new landing files, write manifests, add partitions."""
    from wap_pipeline import aws
    from wap_pipeline.ingest.landing import discover
    from wap_pipeline.partitions import landing_batches
    from wap_pipeline.provision import queue_url

    sqs = aws.client("sqs", settings)
    discovery = discover(
        aws.client("s3", settings),
        sqs,
        settings.landing_bucket,
        settings.landing_prefix,
        settings.manifests_prefix,
        queue_url(sqs, settings.landing_events_queue),
        cursor,
        settings.batch_max_files,
    )
    ids = [m.batch_id for m in discovery.manifests]
    if ids:
        instance.add_dynamic_partitions(landing_batches.name, ids)
    return ids, discovery.cursor


def run_batch(instance, batch_id: str) -> dict:
    """Execute the pipeline job for one batch exactly as the headless runner launches it."""
    from dagster import DagsterEventType

    from wap_pipeline.jobs import PIPELINE_JOB
    from wap_pipeline.runner import PARTITION_TAG, launch_run

    started = time.perf_counter()
    outcome = launch_run(instance, PIPELINE_JOB, {PARTITION_TAG: batch_id}, log_level="WARNING")
    wall = time.perf_counter() - started
    if outcome.status != "SUCCESS":
        failures = [
            e.dagster_event.event_specific_data.error.message
            for e in instance.all_logs(outcome.run_id, of_type=DagsterEventType.STEP_FAILURE)
            if e.dagster_event and e.dagster_event.event_specific_data
        ]
        raise RuntimeError(f"pipeline run for batch {batch_id} ended {outcome.status}: {failures}")
    starts, ends = {}, {}
    for entry in instance.all_logs(
        outcome.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    ):
        target = starts if entry.dagster_event.event_type == DagsterEventType.STEP_START else ends
        target[entry.step_key] = entry.timestamp
    steps = {stage: ends[key] - starts[key] for stage, key in STEPS.items()}
    windows = {stage: (starts[key], ends[key]) for stage, key in STEPS.items()}
    return {"run_id": outcome.run_id, "whole batch": wall, "steps": steps, "windows": windows}


def current_records(table) -> int:
    snapshot = table.current_snapshot()
    return int(snapshot.summary.get("total-records", 0)) if snapshot and snapshot.summary else 0


def measure_wap_overhead(catalog, standardized, batch_id: str, repeat: int = 3) -> dict:
    """WAP of the batch's standardized rows vs a plain append to main, on twin tables."""
    from pyiceberg.expressions import EqualTo

    from wap_pipeline.iceberg import wap
    from wap_pipeline.rules.audit import AUDIT_COLUMNS, count_invalid

    rows = wap.scan_batch(standardized, wap.MAIN, batch_id).cast(standardized.schema().as_arrow())
    seed = rows.slice(0, min(1000, rows.num_rows))
    twins = {}
    for name in ("bench_wap", "bench_plain"):
        with contextlib.suppress(Exception):
            catalog.create_namespace(name)
        table = catalog.create_table(
            (name, "events"), schema=standardized.schema(), partition_spec=standardized.spec()
        )
        table.append(seed, snapshot_properties={wap.BATCH_ID_PROPERTY: "seed"})
        twins[name] = table
    batch_column = rows.schema.get_field_index("batch_id")
    plain_s, wap_s, parts = [], [], []
    for attempt in range(repeat):
        run_id = f"bench-{attempt}"
        batch_field = rows.schema.field(batch_column)
        tagged = rows.set_column(
            batch_column, batch_field, pa.array([run_id] * rows.num_rows, type=batch_field.type)
        )
        properties = {wap.BATCH_ID_PROPERTY: run_id, wap.BOOKMARK_PROPERTY: "bench"}

        def plain(tagged=tagged, properties=properties) -> None:
            started = time.perf_counter()
            twins["bench_plain"].append(tagged, snapshot_properties=properties)
            plain_s.append(time.perf_counter() - started)

        def write_audit_publish(tagged=tagged, properties=properties, run_id=run_id) -> None:
            table = twins["bench_wap"]
            t0 = time.perf_counter()
            branch = wap.next_branch_name(table, run_id)
            wap.create_branch_from_main(table, branch)
            t1 = time.perf_counter()
            with wap.StagedAppend(table) as staged:
                staged.write_all([tagged]).commit(properties, branch=branch)
            t2 = time.perf_counter()
            audit = count_invalid(wap.scan_batch(table, branch, run_id, AUDIT_COLUMNS))
            t3 = time.perf_counter()
            assert audit.rows == rows.num_rows and audit.passed, audit
            wap.fast_forward(table, branch)
            t4 = time.perf_counter()
            wap_s.append(t4 - t0)
            parts.append({"branch": t1 - t0, "write": t2 - t1, "audit": t3 - t2, "publish": t4 - t3})

        # Alternate which goes first, so that neither always meets the same machine load.
        for step in (plain, write_audit_publish) if attempt % 2 == 0 else (write_audit_publish, plain):
            step()
    best = min(range(repeat), key=lambda i: wap_s[i])
    check = twins["bench_wap"].scan(
        row_filter=EqualTo("batch_id", f"bench-{repeat - 1}"), selected_fields=("batch_id",)
    )
    assert check.to_arrow().num_rows == rows.num_rows
    return {
        "rows": rows.num_rows,
        "plain_append_s": min(plain_s),
        "wap_s": wap_s[best],
        "wap_parts_s": parts[best],
        "ratio": wap_s[best] / min(plain_s),
    }


def measure_ingest(settings, messages: int, wave: int) -> dict:
    """Forwarder vs the server's bare receive+delete, same messages and queue depth (waves)."""
    from wap_pipeline import aws
    from wap_pipeline.events import make_events
    from wap_pipeline.ingest import sqs as sqs_calls
    from wap_pipeline.ingest.forwarder import drain
    from wap_pipeline.ingest.producer import send_events
    from wap_pipeline.ingest.receipts import receipt_log
    from wap_pipeline.provision import queue_url

    sqs = aws.client("sqs", settings)
    receipts = receipt_log(aws.client("s3", settings), settings)
    firehose = aws.client("firehose", settings)
    url = queue_url(sqs, settings.queue_name)
    waves = [make_events(min(wave, messages - start), seed=start) for start in range(0, messages, wave)]

    def bare() -> int:
        got = 0
        while True:
            batch = sqs_calls.receive(sqs, url)
            if not batch:
                return got
            sqs_calls.delete(sqs, url, [m["ReceiptHandle"] for m in batch])
            got += len(batch)

    def forward() -> int:
        stats = drain(
            sqs,
            firehose,
            url,
            settings.stream_name,
            group_size=settings.forward_batch_records,
            visibility_timeout_s=settings.visibility_timeout_s,
            wait_s=0,
            limits=settings.payload_limits,
            receipts=receipts,
        )
        assert stats.rejected == 0 and stats.forwarded == stats.deleted, stats
        return stats.forwarded

    results = {}
    # Interleave the two so that both see the same machine load.
    for round_number in range(2):
        for name, consume in (("server", bare), ("forwarder", forward)):
            send_s = consume_s = 0.0
            count = 0
            for events in waves[round_number::2]:
                started = time.perf_counter()
                send_events(sqs, url, events)
                send_s += time.perf_counter() - started
                started = time.perf_counter()
                count += consume()
                consume_s += time.perf_counter() - started
            entry = results.setdefault(name, {"messages": 0, "send_s": 0.0, "consume_s": 0.0})
            entry["messages"] += count
            entry["send_s"] += send_s
            entry["consume_s"] += consume_s
    for entry in results.values():
        entry["rate"] = entry["messages"] / entry["consume_s"]
        entry["send_rate"] = entry["messages"] / entry["send_s"]
    landed = sum(
        1
        for page in aws.client("s3", settings)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=settings.landing_bucket, Prefix=settings.landing_prefix)
        for _ in page.get("Contents", [])
    )
    results["landing_files"] = landed
    results["ratio"] = results["forwarder"]["rate"] / results["server"]["rate"]
    return results


def measure_latency(instance, settings, events: int) -> dict:
    """Send, then let the headless runner evaluate the sensors until idle: when did curated show it?

    Visibility is the commit time of the curated snapshot that published the last of the events.
    """
    from pyiceberg.table.snapshots import ancestors_of

    from wap_pipeline import aws
    from wap_pipeline.events import make_events
    from wap_pipeline.iceberg import wap
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import create_tables
    from wap_pipeline.ingest.producer import send_events
    from wap_pipeline.provision import queue_url
    from wap_pipeline.runner import run_until_idle
    from wap_pipeline.sensors import landing_sensor, sqs_sensor

    sqs = aws.client("sqs", settings)
    batch = make_events(events, seed=7)
    started = time.time()
    send_events(sqs, queue_url(sqs, settings.queue_name), batch)
    report = run_until_idle(instance, timeout_s=300, poll_s=0.2, log_level="WARNING")
    idle_s = time.time() - started
    if report.failed or not report.idle:
        raise RuntimeError(f"latency run did not finish cleanly: {[r.status for r in report.runs]}")
    curated = create_tables(load_wap_catalog(settings))["curated"]
    head = curated.current_snapshot()
    commits = [
        s.timestamp_ms / 1000
        for s in (ancestors_of(head, curated.metadata) if head is not None else [])
        if s.summary is not None and s.summary.get(wap.BATCH_ID_PROPERTY)
    ]
    rows = current_records(curated)
    if rows != events or not commits:
        raise RuntimeError(f"{rows} rows in curated after the latency run, {events} sent")
    intervals = (sqs_sensor.minimum_interval_seconds or 0, landing_sensor.minimum_interval_seconds or 0)
    return {
        "events": events,
        "send_to_curated_s": max(commits) - started,
        "until_idle_s": idle_s,
        "batches": len(commits),
        "runs": len(report.runs),
        "sensor_intervals_s": list(intervals),
    }


# --- the run ---------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def instrument(timings: Timings) -> list[Callable[[], None]]:
    """Time the named parts of the standardized step inside the real run (no behaviour change)."""
    from wap_pipeline.iceberg import wap
    from wap_pipeline.resources.quarantine import Quarantine, QuarantineRead

    return [
        timings.wrap(Quarantine, "ids", "quarantine_read"),
        timings.wrap(QuarantineRead, "ids", "quarantine_wait"),
        timings.wrap(wap, "create_branch_from_main", "branch"),
        # Standardizing streams into the branch write: this includes parsing the chunks.
        timings.wrap(wap, "write_new_branch", "branch_write"),
        timings.wrap(wap, "fast_forward", "publish"),
    ]


def main_batch(args, root: Path) -> dict:
    """The N-event batch: floor, the three stages, peak RSS, WAP overhead."""
    from dagster import DagsterInstance

    from wap_pipeline import aws
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import create_tables
    from wap_pipeline.ingest.landing import LandingCursor
    from wap_pipeline.provision import provision
    from wap_pipeline.settings import Settings
    from wap_pipeline.state import ensure_dagster_home

    out: dict = {}
    with mock.patch.dict(os.environ, scenario_env(root, "main")):
        settings = Settings.from_env()
        provision(settings)
        ensure_dagster_home(settings)
        log(f"main: generating and landing {args.events:,} events")
        ndjson = root / "landing.ndjson"
        landed = land_events(aws.client("s3", settings), settings, args.events, 1, args.quarantined, ndjson)
        out["batch"] = landed.__dict__
        log("main: floor (read_json + write_table)")
        out["floor"] = measure_floor(ndjson, root / "floor.parquet")
        ndjson.unlink()
        (root / "floor.parquet").unlink()
        log(f"main: loading {args.quarantined:,} quarantined ids into DynamoDB")
        dynamodb = aws.client("dynamodb", settings)
        out["quarantine_load_s"] = load_quarantine(dynamodb, settings.quarantine_table, args.quarantined)
        catalog = load_wap_catalog(settings)
        tables = create_tables(catalog)
        with DagsterInstance.get() as instance:
            batch_ids, _ = register_batches(instance, settings, LandingCursor())
            if len(batch_ids) != 1:
                raise RuntimeError(f"expected one batch, landing discovery made {batch_ids}")
            timings = Timings()
            restore = instrument(timings)
            profiler = None
            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.005)
                profiler.start()
            log(f"main: pipeline run for batch {batch_ids[0]}")
            out["peak_before_run_mb"] = PeakRss.peak_mb()
            rss_reset = PeakRss.reset()
            try:
                with RssSampler() as sampler:
                    run = run_batch(instance, batch_ids[0])
                out["stage_peak_rss_mb"] = {
                    stage: sampler.peak_between(*window) for stage, window in run["windows"].items()
                }
            finally:
                peak = PeakRss.peak_mb()
                for undo in restore:
                    undo()
                if profiler is not None:
                    profiler.stop()
                    Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
                    Path(f"{args.profile}.txt").write_text(profiler.output_text(unicode=False, color=False))
                    Path(f"{args.profile}.html").write_text(profiler.output_html())
                    log(f"main: profile written to {args.profile}.txt / .html")
        out["run"] = run
        out["in_run_s"] = dict(timings.seconds)
        out["peak_rss_mb"] = peak
        out["peak_rss_scope"] = "pipeline run" if rss_reset else "whole process"
        for layer in ("raw", "standardized", "curated"):
            tables[layer].refresh()
        counts = {layer: current_records(tables[layer]) for layer in ("raw", "standardized", "curated")}
        out["rows"] = counts
        if counts["raw"] != args.events or not counts["standardized"] == counts["curated"] > 0:
            raise RuntimeError(f"rows do not add up after the main run: {counts}")
        log("main: WAP vs plain append on twin tables")
        out["wap"] = measure_wap_overhead(catalog, tables["standardized"], batch_ids[0])
    return out


def growth_series(args, root: Path) -> dict:
    from dagster import DagsterInstance

    from wap_pipeline import aws
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import create_tables
    from wap_pipeline.ingest.landing import LandingCursor
    from wap_pipeline.provision import provision
    from wap_pipeline.settings import Settings
    from wap_pipeline.state import ensure_dagster_home

    runs = []
    with mock.patch.dict(os.environ, scenario_env(root, "growth")):
        settings = Settings.from_env()
        provision(settings)
        ensure_dagster_home(settings)
        load_quarantine(aws.client("dynamodb", settings), settings.quarantine_table, args.growth_quarantined)
        create_tables(load_wap_catalog(settings))
        s3 = aws.client("s3", settings)
        cursor = LandingCursor()
        with DagsterInstance.get() as instance:
            for number in range(1, args.growth_batches + 1):
                land_events(s3, settings, args.growth_events, 1000 + number, args.growth_quarantined)
                batch_ids, cursor = register_batches(instance, settings, cursor)
                if len(batch_ids) != 1:
                    raise RuntimeError(f"growth batch {number}: discovery made {batch_ids}")
                runs.append(run_batch(instance, batch_ids[0]))
                if number in (1, args.growth_batches) or number % 5 == 0:
                    log(f"growth: batch #{number}: {runs[-1]['whole batch']:.2f} s")
    first, last = runs[0], runs[-1]
    k = min(3, len(runs) // 2) or 1
    head = statistics.median(r["whole batch"] for r in runs[:k])
    tail = statistics.median(r["whole batch"] for r in runs[-k:])
    return {
        "batches": len(runs),
        "events_per_batch": args.growth_events,
        "quarantined_ids": args.growth_quarantined,
        "whole_s": [r["whole batch"] for r in runs],
        "steps_s": [r["steps"] for r in runs],
        "ratio_last_first": last["whole batch"] / first["whole batch"],
        "median_window": k,
        "ratio_medians": tail / head,
    }


def ingest(args, root: Path) -> dict:
    from wap_pipeline.provision import provision
    from wap_pipeline.settings import Settings

    with mock.patch.dict(os.environ, scenario_env(root, "ingest")):
        settings = Settings.from_env()
        provision(settings)
        log(f"ingest: {args.ingest_messages:,} messages, forwarder vs bare receive+delete")
        result = measure_ingest(settings, args.ingest_messages, args.ingest_wave)
        result["wave"] = args.ingest_wave
        return result


def latency(args, root: Path) -> dict:
    from dagster import DagsterInstance

    from wap_pipeline.provision import provision
    from wap_pipeline.settings import Settings
    from wap_pipeline.state import ensure_dagster_home

    with mock.patch.dict(os.environ, scenario_env(root, "latency")):
        settings = Settings.from_env()
        provision(settings)
        ensure_dagster_home(settings)
        log(f"latency: {args.latency_events} events, send -> curated with the headless runner")
        with DagsterInstance.get() as instance:
            return measure_latency(instance, settings, args.latency_events)


# --- report ----------------------------------------------------------------------------------------


def _stage_line(name: str, seconds: float, rows: int, floor_s: float, detail: str = "") -> str:
    line = f"{name}: {seconds:.2f} s, {rows / seconds:,.0f} rows/s, {seconds / floor_s:.2f}x floor"
    return f"{line} ({detail})" if detail else line


def report(results: dict) -> tuple[list[str], list[dict]]:
    m = results["main"]
    floor_s = m["floor"]["seconds"]
    batch, run, inrun, wap = m["batch"], m["run"], m["in_run_s"], m["wap"]
    n = batch["events"]
    env = results["environment"]
    lines = [
        f"wap-pipeline benchmark {results['started_at']}: {env['cores']} cores, {env['ram_gb']:.0f} GB RAM, "
        f"Python {env['python']}, pyiceberg {env['pyiceberg']}, pyarrow {env['pyarrow']}, moto {env['moto']}",
        f"batch: {n:,} events in {batch['files']} landing files, {batch['bytes'] / 1e6:,.1f} MB NDJSON "
        f"({batch['bytes'] / n:.0f} B per landing line, event body {batch['body_bytes'] / n:.0f} B); "
        f"{results['args']['quarantined']:,} quarantined ids, {m['rows']['raw'] - m['rows']['standardized']:,} "
        f"events skipped by them",
        _stage_line(
            "floor",
            floor_s,
            n,
            floor_s,
            f"read_json {m['floor']['read_json_s']:.2f} s + write_table {m['floor']['write_table_s']:.2f} s",
        ),
    ]
    steps = run["steps"]
    q = inrun.get("quarantine_read", 0.0)
    q_wait = inrun.get("quarantine_wait", q)  # what the scan added to the step: the rest overlapped
    # write_new_branch creates the branch itself, and the chunks it writes are standardized as it goes.
    wap_in_run = sum(inrun.get(k, 0.0) for k in ("branch_write", "publish"))
    lines.append(_stage_line("raw append", steps["raw append"], n, floor_s))
    lines.append(
        _stage_line(
            "standardized",
            steps["standardized"],
            n,
            floor_s,
            f"of which waiting for the quarantine read {q_wait:.2f} s (DynamoDB scan of "
            f"{results['args']['quarantined']:,} ids on the local server, {q:.2f} s in the background from "
            f"the start of the step), read + standardize + branch write (streamed together, the wait "
            f"included) + publish {wap_in_run:.2f} s",
        )
    )
    lines.append(_stage_line("curated", steps["curated"], m["rows"]["standardized"], floor_s))
    for check in ("keys unique check", "row accounting check"):
        lines.append(_stage_line(check, steps[check], m["rows"]["curated"], floor_s))
    lines.append(_stage_line("daily totals", steps["daily totals"], m["rows"]["curated"], floor_s))
    overhead = run["whole batch"] - sum(steps.values())
    lines.append(
        _stage_line(
            "whole batch",
            run["whole batch"],
            n,
            floor_s,
            f"Dagster run overhead {overhead:.2f} s; without the local DynamoDB scan "
            f"{(run['whole batch'] - q_wait) / floor_s:.2f}x floor",
        )
    )
    by_stage = ", ".join(f"{stage} {mb:,.0f}" for stage, mb in m["stage_peak_rss_mb"].items())
    lines.append(
        f"peak RSS: {m['peak_rss_mb']:,.0f} MB ({m['peak_rss_scope']}, {n:,} events; sampled peak by stage, "
        f"MB: {by_stage}); process high-water mark {results['process_peak_rss_mb']:,.0f} MB"
    )
    parts = wap["wap_parts_s"]
    lines.append(
        f"WAP overhead: {wap['ratio']:.2f}x (write-audit-publish {wap['wap_s']:.2f} s = branch {parts['branch']:.2f} "
        f"+ branch write {parts['write']:.2f} + audit {parts['audit']:.2f} + publish {parts['publish']:.2f}; "
        f"plain append to main {wap['plain_append_s']:.2f} s; {wap['rows']:,} standardized rows, best of 3 each)"
    )
    g = results["growth"]
    first, last = g["steps_s"][0], g["steps_s"][-1]
    per_stage = ", ".join(f"{s} {first[s]:.2f} -> {last[s]:.2f} s" for s in STEPS)
    lines.append(
        f"growth: batch #{g['batches']} / batch #1 = {g['ratio_last_first']:.2f}x ({g['whole_s'][0]:.2f} s -> "
        f"{g['whole_s'][-1]:.2f} s); median of the last {g['median_window']} / first {g['median_window']} = "
        f"{g['ratio_medians']:.2f}x; {g['batches']} batches of {g['events_per_batch']:,} events on the same "
        f"tables (smaller than the main batch to fit the time budget; {g['quarantined_ids']:,} quarantined ids)"
    )
    lines.append(f"  per stage #1 -> #{g['batches']}: {per_stage}")
    i = results["ingest"]
    lines.append(
        f"ingest: forwarder {i['forwarder']['rate']:,.0f} msg/s (receive + parse + PutRecordBatch + delete) vs "
        f"server {i['server']['rate']:,.0f} msg/s (bare receive + delete), {i['ratio']:.2f}x; "
        f"{i['forwarder']['messages']:,} messages each in waves of {i['wave']}, "
        f"send {i['server']['send_rate']:,.0f} msg/s"
    )
    lat = results["latency"]
    lines.append(
        f"latency: {lat['send_to_curated_s']:.2f} s send -> visible in curated for {lat['events']} events "
        f"({lat['runs']} runs by the headless runner, idle after {lat['until_idle_s']:.2f} s; under the "
        f"daemon the sensors tick at most every {lat['sensor_intervals_s'][0]} s and "
        f"{lat['sensor_intervals_s'][1]} s, which can add up to {sum(lat['sensor_intervals_s'])} s)"
    )
    whole_x = run["whole batch"] / floor_s
    checks = [
        ("whole batch <= 3.0x floor", whole_x, TARGETS["whole_batch_x_floor"], "x"),
        ("WAP overhead <= 1.3x", wap["ratio"], TARGETS["wap_overhead_x"], "x"),
        (
            f"growth: batch #{g['batches']} <= 1.2x batch #1 (median of {g['median_window']})",
            g["ratio_medians"],
            TARGETS["growth_x"],
            "x",
        ),
        (f"peak RSS <= 2 GB for {n:,} events", m["peak_rss_mb"], TARGETS["peak_rss_mb"], " MB"),
    ]
    target_rows = [
        {"target": name, "value": value, "limit": limit, "met": value <= limit}
        for name, value, limit, _ in checks
    ]
    target_rows.append(
        {
            "target": "ingest >= 0.5x the server's raw rate",
            "value": i["ratio"],
            "limit": TARGETS["ingest_x_server"],
            "met": i["ratio"] >= TARGETS["ingest_x_server"],
        }
    )
    lines.append("targets:")
    units = [c[3] for c in checks] + ["x"]
    for row, unit in zip(target_rows, units, strict=True):
        value = f"{row['value']:,.0f}{unit}" if unit == " MB" else f"{row['value']:.2f}{unit}"
        lines.append(f"  {'PASS' if row['met'] else 'MISS'} {row['target']}: {value}")
    return lines, target_rows


def _environment() -> dict:
    import moto
    import pyarrow
    import pyiceberg

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "ram_gb": ram,
        "python": platform.python_version(),
        "pyiceberg": pyiceberg.__version__,
        "pyarrow": pyarrow.__version__,
        "moto": moto.__version__,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the main batch")
    parser.add_argument("--json", default=str(RESULTS / "latest.json"), help="write the results here")
    parser.add_argument("--quarantined", type=int, help="quarantined ids (default: 100,000, or events / 10)")
    parser.add_argument("--growth-batches", type=int, default=20)
    parser.add_argument("--growth-events", type=int, help="events per growth batch (default: events / 100)")
    parser.add_argument("--growth-quarantined", type=int, default=1000)
    parser.add_argument("--ingest-messages", type=int, help="default: 1,500 (events / 10 when smaller)")
    parser.add_argument("--ingest-wave", type=int, default=30, help="messages sent before each drain")
    parser.add_argument("--latency-events", type=int, default=100)
    parser.add_argument("--profile", help="profile the main pipeline run with pyinstrument to PATH.txt/.html")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args(argv)
    if args.quarantined is None:
        args.quarantined = min(100_000, max(100, args.events // 10))
    if args.growth_events is None:
        args.growth_events = max(100, args.events // 100)
    if args.ingest_messages is None:
        args.ingest_messages = min(1500, max(100, args.events // 10))
    return args


def quiet_warnings() -> None:
    """Dagster's beta/preview notices and deprecations would drown the report."""
    import dagster

    for category in (DeprecationWarning, dagster.BetaWarning, dagster.PreviewWarning):
        warnings.filterwarnings("ignore", category=category)


@contextlib.contextmanager
def local_server(prefix: str, keep: bool = False) -> Iterator[Path]:
    """The project's local AWS server on a free port, reached through ``AWS_ENDPOINT_URL``, with a
    temporary state directory (yielded; removed afterwards unless ``keep``)."""
    from wap_pipeline import local_stack
    from wap_pipeline.settings import Settings

    root = Path(tempfile.mkdtemp(prefix=prefix))
    port = _free_port()
    base = {
        "WAP_PROFILE": "local",
        "WAP_LOCAL_PORT": str(port),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "WAP_STATE_DIR": str(root / "server"),
    }
    for name in [n for n in os.environ if n.startswith("PYICEBERG_CATALOG__")]:
        del os.environ[name]  # the embedded SQLite catalog of each scenario's state directory
    with mock.patch.dict(os.environ, base):
        server = Settings.from_env()
        local_stack.up(server)
        log(f"local AWS server on port {port}; state in {root}")
        try:
            yield root
        finally:
            local_stack.down(server)
            if not keep:
                shutil.rmtree(root, ignore_errors=True)


def _scenario_with_peak(scenario: Callable[[argparse.Namespace, Path], dict], args, root: Path) -> dict:
    quiet_warnings()
    result = scenario(args, root)
    peak = max(PeakRss.peak_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {**result, "process_peak_rss_mb": peak}


def in_own_process(scenario: Callable[[argparse.Namespace, Path], dict], args, root: Path) -> dict:
    """``scenario(args, root)`` in a spawned process of its own (with this process's environment: the
    local server). Each scenario sets its own environment, and the code location reads its environment
    once, when Dagster loads it (``wap_pipeline.definitions``): one process per environment, as in a
    deployment. The result carries that process's peak RSS."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_scenario_with_peak, scenario, args, root).result()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_warnings()
    started = time.perf_counter()
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "environment": _environment(),
    }
    with local_server("wap-bench-", keep=args.keep) as root:
        for name, scenario in (
            ("latency", latency),
            ("ingest", ingest),
            ("main", main_batch),
            ("growth", growth_series),
        ):
            results[name] = in_own_process(scenario, args, root)
    results["process_peak_rss_mb"] = max(
        PeakRss.peak_mb(),
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        *(results[name]["process_peak_rss_mb"] for name in ("latency", "ingest", "main", "growth")),
    )
    results["total_s"] = time.perf_counter() - started
    lines, targets = report(results)
    results["targets"] = targets
    lines.append(f"bench: {results['total_s']:.0f} s in all; results in {args.json}")
    print("\n".join(lines))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
