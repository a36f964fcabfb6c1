import os
import socket
import subprocess

from dagster import DagsterRunStatus, instance_for_test

from wap_pipeline.runner import EXECUTOR_TAG, fail_orphaned_runs


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def started_run(instance, run_id: str, executor: str):
    from dagster._core.storage.dagster_run import DagsterRun

    run = DagsterRun(
        job_name="standard_ingest",
        run_id=run_id,
        status=DagsterRunStatus.STARTED,
        tags={EXECUTOR_TAG: executor},
    )
    return instance.add_run(run)


def test_only_runs_whose_own_process_died_are_failed():
    host = socket.gethostname()
    pid = dead_pid()
    with instance_for_test() as instance:
        started_run(instance, "own-dead", f"{host}:{pid}:own-dead")
        started_run(instance, "inherited", f"{host}:{pid}:own-dead")  # a UI re-execution copied the tag
        started_run(instance, "alive", f"{host}:{os.getpid()}:alive")
        started_run(instance, "other-host", f"elsewhere:{pid}:other-host")
        assert fail_orphaned_runs(instance) == ["own-dead"]
        statuses = {r.run_id: r.status for r in instance.get_runs()}
        assert statuses == {
            "own-dead": DagsterRunStatus.FAILURE,
            "inherited": DagsterRunStatus.STARTED,
            "alive": DagsterRunStatus.STARTED,
            "other-host": DagsterRunStatus.STARTED,
        }
