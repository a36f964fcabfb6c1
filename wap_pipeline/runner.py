"""Drive the pipeline headless, the way the Dagster daemon would, until nothing is left to do.

Each round evaluates the sensors (with cursors kept in the Dagster instance), adds the partitions
they request, and executes the runs they request -- in this process, with the in-process executor.
Runs are recorded on the instance with the same code-location origin as ``workspace.yaml`` gives the
webserver, so a failed run can be re-executed from the UI or through GraphQL later.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import DagsterInstance, DagsterRunStatus, SensorDefinition, build_sensor_context
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from wap_pipeline.definitions import RESOURCES, defs
from wap_pipeline.sensors import landing_sensor, queue_depth, sqs_sensor

CODE_LOCATION = "wap_pipeline"
DEFINITIONS_MODULE = "wap_pipeline.definitions"
SINGLETON_REPOSITORY = "__repository__"
_CURSOR_KEY = "wap_pipeline/sensor_cursor/{}"


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


def launch_run(
    instance: DagsterInstance, job_name: str, tags: dict[str, str], log_level: str = "INFO"
) -> RunOutcome:
    """Create a run as the daemon would, and execute it here."""
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=os.getcwd()
    )
    recon_job = repository.get_reconstructable_job(job_name)
    job_def = recon_job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags={**job_def.tags, **tags},
        remote_job_origin=_remote_origin(job_name),
        job_code_origin=recon_job.get_python_origin(),
    )
    execute_run(recon_job, run, instance)
    finished = instance.get_run_by_id(run.run_id)
    return RunOutcome(run.run_id, job_name, tags.get("dagster/partition"), finished.status.value)


def _evaluate(instance: DagsterInstance, sensor_def: SensorDefinition):
    key = _CURSOR_KEY.format(sensor_def.name)
    cursor = instance.run_storage.get_cursor_values({key}).get(key)
    context = build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        definitions=defs,
        resources=RESOURCES,
    )
    with partition_loading_context(dynamic_partitions_store=instance):
        data = sensor_def.evaluate_tick(context)
    return key, data


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
        tags = dict(request.tags)
        if request.partition_key:
            tags["dagster/partition"] = request.partition_key
        job_name = request.job_name or sensor_def.job_name
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
    """Alternate the sensors until the queue is empty (nothing in flight), no run was requested,
    and ``producer_active()`` says no more messages are coming."""
    report = RunnerReport()
    deadline = time.monotonic() + timeout_s
    aws = RESOURCES["aws"]
    while time.monotonic() < deadline:
        report.rounds += 1
        launched = run_sensor_once(instance, sqs_sensor, report, log, log_level)
        launched += run_sensor_once(instance, landing_sensor, report, log, log_level)
        if launched:
            continue
        producing = producer_active()
        visible, in_flight = queue_depth(aws)
        if visible == 0 and in_flight == 0 and not producing:
            report.idle = True
            return report
        time.sleep(poll_s)
    return report
