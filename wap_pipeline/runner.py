"""Drive the pipeline headless, the way the Dagster daemon would, until nothing is left to do.

Each round evaluates the sensors (with cursors kept in the Dagster instance), adds the partitions
they request, and executes the runs they request -- in this process, with the in-process executor.
Runs are recorded on the instance with the same code-location origin as ``workspace.yaml`` gives the
webserver, so a failed run can be re-executed from the UI or through GraphQL later.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    SensorDefinition,
    build_reconstructable_job,
    build_sensor_context,
    partition_loading_context,
)
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from wap_pipeline.definitions import defs, resources_for
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.jobs import OPERATIONS_JOB, PIPELINE_JOB
from wap_pipeline.partitions import landing_batches
from wap_pipeline.sensors import alerts_sensor, landing_sensor, sqs_sensor
from wap_pipeline.settings import Settings

CODE_LOCATION = "wap_pipeline"
DEFINITIONS_MODULE = "wap_pipeline.definitions"
SINGLETON_REPOSITORY = "__repository__"
_CURSOR_KEY = "wap_pipeline/sensor_cursor/{}"
PARTITION_TAG = "dagster/partition"
# The tags the sensor daemon puts on a run it launched for a run request (its run-key dedup reads them).
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
# Which process executes a headless run ("<host>:<pid>:<run id>"): lets a later redrive recognise
# runs whose process died. The run id makes an inherited tag (UI re-executions copy the parent's
# tags) harmless: it only counts on the run it names.
EXECUTOR_TAG = "wap/executor"
_UNFINISHED = (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)


@dataclass
class RunOutcome:
    run_id: str
    job_name: str
    partition: str | None
    status: str


@dataclass
class RunnerReport:
    runs: list[RunOutcome] = field(default_factory=list)
    idle: bool = False
    rounds: int = 0

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if r.status != DagsterRunStatus.SUCCESS.value]


def _remote_origin(job_name: str) -> RemoteJobOrigin:
    target = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=DEFINITIONS_MODULE,
        attribute="defs",
        working_directory=os.getcwd(),
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=target, location_name=CODE_LOCATION
    )
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name=SINGLETON_REPOSITORY
        ),
        job_name=job_name,
    )


def _reconstructable(job_name: str):
    job = build_reconstructable_job(
        DEFINITIONS_MODULE, "job_named", (job_name,), reconstructor_working_directory=os.getcwd()
    )
    # Dagster keeps the last job definition it loaded, per process, and the definitions are wired
    # from the process's environment when they load (wap_pipeline.definitions). A process may drive
    # several environments one after another (the chaos harness runs the CLIs in-process, one
    # schedule's state after another's): each run loads the code location afresh.
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    return job


def launch_run(
    instance: DagsterInstance,
    job_name: str,
    tags: dict[str, str],
    log_level: str = "INFO",
    parent: DagsterRun | None = None,
) -> RunOutcome:
    """Create a run as the daemon (or, with ``parent``, the UI's "re-execute from failure") would,
    and execute it here."""
    recon_job = _reconstructable(job_name)
    job_def = recon_job.get_definition()
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    lineage: dict = {}
    if parent is not None:
        step_keys, known_state = KnownExecutionState.build_resume_retry_reexecution(
            instance=instance, parent_run=parent
        )
        lineage = {
            "execution_plan": create_execution_plan(
                recon_job,
                run_config,
                step_keys_to_execute=step_keys,
                known_state=known_state,
                tags=parent.tags,
            ),
            "parent_run_id": parent.run_id,
            "root_run_id": parent.root_run_id or parent.run_id,
        }
        tags = {**parent.tags, **tags}
    run_id = str(uuid.uuid4())
    run = instance.create_run_for_job(
        job_def=job_def,
        run_id=run_id,
        run_config=run_config,
        tags={**job_def.tags, **tags, EXECUTOR_TAG: f"{socket.gethostname()}:{os.getpid()}:{run_id}"},
        remote_job_origin=_remote_origin(job_name),
        job_code_origin=recon_job.get_python_origin(),
        **lineage,
    )
    execute_run(recon_job, run, instance)
    finished = instance.get_run_by_id(run.run_id)
    return RunOutcome(run.run_id, job_name, tags.get(PARTITION_TAG), finished.status.value)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_runs(instance: DagsterInstance, log: Callable[[str], None] = lambda m: None) -> list[str]:
    """Mark FAILED the headless runs of this host whose process died (killed, OOM) mid-run.

    Without a daemon nobody else would; a run left STARTED would never be re-driven.
    """
    orphaned = []
    for run in instance.get_runs(RunsFilter(statuses=list(_UNFINISHED))):
        host, _, rest = run.tags.get(EXECUTOR_TAG, "").partition(":")
        pid, _, owner_run_id = rest.partition(":")
        if host != socket.gethostname() or owner_run_id != run.run_id or _process_alive(int(pid)):
            continue
        instance.report_run_failed(run, f"process {pid} running it died (killed or out of memory)")
        orphaned.append(run.run_id)
        log(
            f"run {run.run_id} ({run.tags.get(PARTITION_TAG, run.job_name)}): its process died; marked FAILED"
        )
    return orphaned


def latest_batch_runs(instance: DagsterInstance) -> dict[str, DagsterRun]:
    """The newest pipeline run of each batch partition."""
    latest: dict[str, DagsterRun] = {}
    for run in instance.get_runs(RunsFilter(job_name=PIPELINE_JOB)):  # newest first
        key = run.tags.get(PARTITION_TAG)
        if key is not None:
            latest.setdefault(key, run)
    return latest


REDRIVABLE_STATUSES = frozenset({DagsterRunStatus.FAILURE.value, DagsterRunStatus.CANCELED.value})


def select_batches_to_redrive(
    known: list[str], latest_status: dict[str, str], partitions: list[str] | None = None
) -> list[str]:
    """Batches to re-drive, oldest first: those whose newest run failed or was canceled, and those
    registered but never run. A batch whose newest run succeeded or is still going is left alone.

    One rule for both paths: headless (:func:`redrive`) and GraphQL (``wap-pipeline rerun-failed``).
    """
    return [
        key
        for key in sorted(known)
        if (partitions is None or key in partitions)
        and (key not in latest_status or latest_status[key] in REDRIVABLE_STATUSES)
    ]


def batches_to_redrive(
    instance: DagsterInstance, partitions: list[str] | None = None
) -> list[tuple[str, DagsterRun | None]]:
    """Batches whose newest run failed (with that run), and batches registered but never run."""
    latest = latest_batch_runs(instance)
    known = instance.get_dynamic_partitions(landing_batches.name)
    statuses = {key: run.status.value for key, run in latest.items()}
    return [(key, latest.get(key)) for key in select_batches_to_redrive(known, statuses, partitions)]


def redrive(
    instance: DagsterInstance,
    partitions: list[str] | None = None,
    log: Callable[[str], None] = lambda message: None,
    log_level: str = "INFO",
) -> RunnerReport:
    """Re-execute failed batches from failure (completed steps are not redone), oldest first;
    stop at the first that fails again, since the breaker would stop the rest."""
    report = RunnerReport()
    fail_orphaned_runs(instance, log)
    for key, parent in batches_to_redrive(instance, partitions):
        outcome = launch_run(instance, PIPELINE_JOB, {PARTITION_TAG: key}, log_level, parent=parent)
        report.runs.append(outcome)
        origin = f"re-execution of {parent.run_id}" if parent else "first run"
        log(f"{PIPELINE_JOB} {key} ({origin}) -> {outcome.status} (run {outcome.run_id})")
        if outcome.status != DagsterRunStatus.SUCCESS.value:
            break
    report.idle = True
    return report


class UnknownBatchError(ValueError):
    """No manifest for this batch id: there is nothing to re-run."""


def rerun(
    instance: DagsterInstance,
    partitions: list[str],
    batch_exists: Callable[[str], bool],
    log: Callable[[str], None] = lambda message: None,
    log_level: str = "INFO",
) -> RunnerReport:
    """Materialize each batch again from its first step, whether or not it succeeded before (the UI's
    "Materialize selected partition"). A batch already in a table changes nothing there: each step
    finds it in the table's ledger. A batch with a manifest that this instance does not know (a lost
    Dagster instance) is registered first; one without a manifest is refused."""
    known = set(instance.get_dynamic_partitions(landing_batches.name))
    unknown = [key for key in partitions if key not in known and not batch_exists(key)]
    if unknown:
        raise UnknownBatchError(f"no manifest for batch(es) {', '.join(unknown)}: nothing to re-run")
    missing = [key for key in partitions if key not in known]
    if missing:
        instance.add_dynamic_partitions(landing_batches.name, missing)
    report = RunnerReport()
    for key in partitions:
        outcome = launch_run(instance, PIPELINE_JOB, {PARTITION_TAG: key}, log_level)
        report.runs.append(outcome)
        log(f"{PIPELINE_JOB} {key} (re-run) -> {outcome.status} (run {outcome.run_id})")
    report.idle = True
    return report


def _evaluate(instance: DagsterInstance, sensor_def: SensorDefinition):
    key = _CURSOR_KEY.format(sensor_def.name)
    cursor = instance.run_storage.get_cursor_values({key}).get(key)
    with (
        build_sensor_context(
            instance=instance,
            instance_ref=instance.get_ref(),
            cursor=cursor,
            definitions=defs(),
            resources=resources_for(Settings.from_env()),
        ) as context,
        partition_loading_context(dynamic_partitions_store=instance),
    ):
        data = sensor_def.evaluate_tick(context)
    return key, data


def _run_key_used(instance: DagsterInstance, sensor_def: SensorDefinition, run_key: str) -> bool:
    tags = {RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_def.name}
    return instance.get_runs_count(RunsFilter(tags=tags)) > 0


def run_sensor_once(
    instance: DagsterInstance,
    sensor_def: SensorDefinition,
    report: RunnerReport,
    log: Callable[[str], None],
    log_level: str = "INFO",
) -> int:
    """One tick of a sensor: apply its partition requests, run its run requests. Returns runs launched."""
    key, data = _evaluate(instance, sensor_def)
    for request in data.dynamic_partitions_requests or []:
        if request.partition_keys:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    launched = 0
    for request in data.run_requests or []:
        if request.run_key and _run_key_used(instance, sensor_def, request.run_key):
            continue  # as the daemon does: one run per run key and sensor
        tags = dict(request.tags)
        if request.partition_key:
            tags[PARTITION_TAG] = request.partition_key
        job_name = request.job_name or sensor_def.job_name
        if request.run_key:
            tags.update({RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_def.name})
        outcome = launch_run(instance, job_name, tags, log_level)
        report.runs.append(outcome)
        launched += 1
        log(
            f"{job_name} {outcome.partition or ''} -> {outcome.status} (run {outcome.run_id})".replace(
                "  ", " "
            )
        )
    if data.cursor is not None:
        instance.run_storage.set_cursor_values({key: data.cursor})
    if not launched and data.skip_message:
        log(f"{sensor_def.name}: {data.skip_message}")
    return launched


def run_until_idle(
    instance: DagsterInstance,
    timeout_s: float = 900.0,
    poll_s: float = 1.0,
    log: Callable[[str], None] = lambda message: None,
    log_level: str = "INFO",
    producer_active: Callable[[], bool] = lambda: False,
) -> RunnerReport:
    """Alternate the sensors until a round requests no run, the ingest and landing-events queues are
    empty (nothing in flight), and ``producer_active()`` says no more messages are coming."""
    report = RunnerReport()
    deadline = time.monotonic() + timeout_s
    aws = resources_for(Settings.from_env())["aws"]
    settings = aws.settings()
    while time.monotonic() < deadline:
        report.rounds += 1
        launched = run_sensor_once(instance, sqs_sensor, report, log, log_level)
        launched += run_sensor_once(instance, landing_sensor, report, log, log_level)
        run_sensor_once(instance, alerts_sensor, report, lambda message: None, log_level)
        if launched:
            continue
        producing = producer_active()
        try:
            # Both queues of work: messages not yet forwarded, and landed files whose announcement no
            # tick has batched yet (a landing tick that failed, S3 unreachable, leaves it there).
            waiting = sum(
                sum(sqs_calls.depth(aws.client("sqs"), aws.queue_url(name)))
                for name in (settings.queue_name, settings.landing_events_queue)
            )
        except (BotoCoreError, ClientError) as error:
            log(f"a work queue is unreachable, waiting: {error}")
            time.sleep(poll_s)
            continue
        if waiting == 0 and not producing:
            report.idle = True
            observe = launch_run(instance, OPERATIONS_JOB, {}, log_level)
            report.runs.append(observe)
            log(f"{OPERATIONS_JOB} -> {observe.status} (run {observe.run_id})")
            # Announce what the observation found (a failed reconciliation) before going idle.
            run_sensor_once(instance, alerts_sensor, report, lambda message: None, log_level)
            return report
        time.sleep(poll_s)
    return report
