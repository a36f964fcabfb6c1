"""Which runs a new headless stack marks failed: those an earlier stack's daemon left unfinished --
never one a headless runner is executing in its own process."""

from __future__ import annotations

import uuid

from dagster import DagsterInstance, DagsterRunStatus, job, op

from wap_pipeline.headless import fail_runs_left_by_a_stopped_stack
from wap_pipeline.runner import EXECUTOR_TAG, executed_by_a_runner


@op
def noop() -> None:
    pass


@job
def tiny() -> None:
    noop()


def _run(instance: DagsterInstance, executor_of: str | None = None, status=DagsterRunStatus.STARTED) -> str:
    run_id = str(uuid.uuid4())
    tags = {EXECUTOR_TAG: f"host:1:{executor_of or run_id}"} if executor_of is not None else {}
    instance.create_run_for_job(tiny, run_id=run_id, tags=tags, status=status)
    return run_id


def test_runs_a_stopped_stack_left_are_failed_and_a_runners_own_are_not(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        launched_by_a_daemon = _run(instance)
        in_a_runner = str(uuid.uuid4())
        instance.create_run_for_job(
            tiny,
            run_id=in_a_runner,
            tags={EXECUTOR_TAG: f"host:1:{in_a_runner}"},
            status=DagsterRunStatus.STARTED,
        )
        # A re-execution through the daemon inherits its parent's tags: the executor tag names the parent.
        reexecution = _run(instance, executor_of=in_a_runner)
        starting = _run(instance, status=DagsterRunStatus.STARTING)
        finished = _run(instance, status=DagsterRunStatus.SUCCESS)

    left = [launched_by_a_daemon, reexecution, starting]
    assert sorted(fail_runs_left_by_a_stopped_stack(tmp_path)) == sorted(left)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        status = {r.run_id: r.status for r in instance.get_runs()}
    assert {status[run_id] for run_id in left} == {DagsterRunStatus.FAILURE}
    assert (status[in_a_runner], status[finished]) == (DagsterRunStatus.STARTED, DagsterRunStatus.SUCCESS)


def test_an_inherited_executor_tag_is_not_the_runs_own():
    assert executed_by_a_runner("r1", {EXECUTOR_TAG: "host:12:r1"})
    assert not executed_by_a_runner("r2", {EXECUTOR_TAG: "host:12:r1"})
    assert not executed_by_a_runner("r1", {})
