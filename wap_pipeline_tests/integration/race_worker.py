"""One of the racing writers of ``test_writer_race``, in its own process: for each round, wait until
every writer is ready, then materialize raw, standardized and curated for each of its batches, in order.

    python -m wap_pipeline_tests.integration.race_worker BARRIER_DIR NAME WRITERS ROUND [ROUND ...]

A ROUND is comma-separated batch ids. Exit 0 when every materialization succeeded.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dagster import DagsterInstance, materialize

from wap_pipeline.assets.curated import curated_events
from wap_pipeline.assets.raw import raw_events
from wap_pipeline.assets.standardized import standardized_events
from wap_pipeline.definitions import resources_for
from wap_pipeline.partitions import landing_batches
from wap_pipeline.settings import Settings


def wait_for_everyone(barrier: Path, name: str, writers: int) -> None:
    (barrier / f"{name}.ready").touch()
    deadline = time.monotonic() + 300
    while len(list(barrier.glob("*.ready"))) < writers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other writers never reached {barrier}")
        time.sleep(0.01)


def main(barrier_dir: str, name: str, writers: str, *rounds: str) -> int:
    failed = []
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(landing_batches.name, [b for r in rounds for b in r.split(",")])
        for number, batches in enumerate(rounds):
            barrier = Path(barrier_dir) / f"round-{number}"
            barrier.mkdir(parents=True, exist_ok=True)
            wait_for_everyone(barrier, name, int(writers))
            for batch in batches.split(","):
                result = materialize(
                    [raw_events, standardized_events, curated_events],
                    partition_key=batch,
                    instance=instance,
                    resources=resources_for(Settings.from_env()),
                    raise_on_error=False,
                )
                if not result.success:
                    failed.append(batch)
    print(f"{name}: failed {failed}" if failed else f"{name}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
