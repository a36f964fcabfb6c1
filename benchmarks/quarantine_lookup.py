"""Quarantine lookup at scale: one paginated scan per run, then a vectorised mask.

Starts its own local AWS server, loads N quarantined ids, and reports, all measured in this run:
  * scan:     Quarantine.ids() (what each standardized run does once)  vs  a bare boto3 Scan of the
              same table (the floor: the cheapest way to read every id);
  * filter:   standardize() of a B-event batch with the N ids  vs  the same batch with none.

    python benchmarks/quarantine_lookup.py --ids 100000 --batch 20000
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from datetime import UTC, datetime

import orjson
import pyarrow as pa

from wap_pipeline import aws, local_stack
from wap_pipeline.events import make_events
from wap_pipeline.iceberg.schemas import RAW_SCHEMA, STANDARDIZED_SCHEMA, payload_fields
from wap_pipeline.provision import provision
from wap_pipeline.resources.quarantine import Quarantine
from wap_pipeline.rules.standardize import standardize
from wap_pipeline.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()

    settings = Settings(local_port=_free_port(), state_dir=tempfile.mkdtemp(prefix="wap-bench-"))
    local_stack.up(settings)
    try:
        provision(settings)
        dynamodb = aws.client("dynamodb", settings)
        ids = [f"evt_q{i:09d}" for i in range(args.ids)]
        started = time.perf_counter()
        for start in range(0, len(ids), 25):
            requests = [
                {"PutRequest": {"Item": aws.to_item({"record_id": i, "reason": "bench"})}}
                for i in ids[start : start + 25]
            ]
            pending = {settings.quarantine_table: requests}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None
        print(f"loaded {args.ids} quarantined ids in {time.perf_counter() - started:.1f} s")

        quarantine = Quarantine(dynamodb, settings.quarantine_table)

        def bare_scan() -> int:
            count = 0
            for page in dynamodb.get_paginator("scan").paginate(TableName=settings.quarantine_table):
                count += len(page["Items"])
            return count

        floor_s, count = _timed(bare_scan)
        ours_s, loaded = _timed(quarantine.ids)
        assert count == len(loaded) == args.ids
        print(
            f"scan:   {ours_s:.2f} s for {args.ids} ids; bare boto3 scan {floor_s:.2f} s; {ours_s / floor_s:.2f}x floor"
        )

        now = datetime.now(UTC)
        events = make_events(args.batch, seed=1, now=now)
        for n, event in enumerate(events[::100]):  # 1 % of the batch is quarantined
            event["event_id"] = ids[n * 7919 % len(ids)]
        raw = pa.Table.from_pylist(
            [
                {
                    "batch_id": "bench",
                    "landing_file_key": "landing/bench",
                    "line_number": n,
                    "message_id": f"m{n}",
                    "is_replay": False,
                    "body": orjson.dumps(e).decode(),
                    "ingested_at": now,
                }
                for n, e in enumerate(events)
            ],
            schema=RAW_SCHEMA.as_arrow(),
        )
        fields = payload_fields(STANDARDIZED_SCHEMA)
        base_s, _ = _timed(lambda: standardize(raw, fields, now))
        with_s, result = _timed(lambda: standardize(raw, fields, now, loaded))
        print(
            f"filter: standardize {args.batch} events with {args.ids} quarantined ids {with_s:.2f} s vs "
            f"{base_s:.2f} s with none; {with_s / base_s:.2f}x; skipped {result.skipped.num_rows}"
        )
    finally:
        local_stack.down(settings)


if __name__ == "__main__":
    main()
