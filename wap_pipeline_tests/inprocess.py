"""The pipeline driven in the test's own process: for tests whose point is what the pipeline does with
their data, not the CLI, the daemon or a crash (those keep `wap-pipeline run --until-idle`).

The sensors are evaluated with ``build_sensor_context`` against the real local server, and the runs
they request are executed with ``execute_in_process`` on the test's Dagster instance -- the same
definitions, resources and instance, with Dagster's public API only, and no process to start and
no definitions to load again per command. Runs carry the daemon's run-key tags, so a daemon started
later does not run them again. They have no code-location origin, so the UI (GraphQL) cannot
re-execute them from failure: a test that re-drives a failed run (`redrive`, `resume-pipeline`) lets
`run --until-idle` make it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance, RunsFilter, build_sensor_context

from wap_pipeline.definitions import defs, resources_for
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.jobs import OPERATIONS_JOB
from wap_pipeline.sensors import landing_sensor, sqs_sensor
from wap_pipeline.settings import Settings
from wap_pipeline.state import ensure_dagster_home

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
_CURSOR_KEY = "wap_pipeline_tests/inprocess_cursor/{}"


@dataclass
class Ran:
    run_id: str
    job_name: str
    partition: str | None
    success: bool


def drive(settings: Settings | None = None, observe: bool = True, max_rounds: int = 200) -> list[Ran]:
    """Evaluate the work sensors and execute what they request until the ingest queue is empty and
    they request nothing; then (``observe``) run the operations job once, as `run --until-idle` does.
    Returns every run, in order; a failed run does not stop the others (as with the daemon)."""
    settings = settings or Settings.from_env()
    ensure_dagster_home(settings)
    definitions = defs()
    resources = resources_for(settings)
    aws = resources["aws"]
    ran: list[Ran] = []
    with DagsterInstance.get() as instance:
        for _ in range(max_rounds):
            launched = sum(
                _tick(instance, definitions, resources, sensor, ran)
                for sensor in (sqs_sensor, landing_sensor)
            )
            visible, in_flight = sqs_calls.depth(aws.client("sqs"), aws.queue_url())
            if not launched and visible == 0 and in_flight == 0:
                if observe:
                    job = definitions.resolve_job_def(OPERATIONS_JOB)
                    result = job.execute_in_process(instance=instance, raise_on_error=False)
                    ran.append(Ran(result.run_id, job.name, None, result.success))
                return ran
    raise AssertionError(f"the pipeline was not idle after {max_rounds} rounds: {ran}")


def _tick(instance: DagsterInstance, definitions, resources, sensor_def, ran: list[Ran]) -> int:
    key = _CURSOR_KEY.format(sensor_def.name)
    cursor = instance.run_storage.get_cursor_values({key}).get(key)
    with build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        definitions=definitions,
        resources=resources,
    ) as context:
        data = sensor_def.evaluate_tick(context)
    for request in data.dynamic_partitions_requests or []:
        if request.partition_keys:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    launched = 0
    for request in data.run_requests or []:
        tags = dict(request.tags)
        if request.run_key:
            run_key_tags = {RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor_def.name}
            if instance.get_runs_count(RunsFilter(tags=run_key_tags)):
                continue  # as the daemon does: one run per run key and sensor
            tags.update(run_key_tags)
        job = definitions.resolve_job_def(request.job_name or sensor_def.job_name)
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=tags, raise_on_error=False
        )
        ran.append(Ran(result.run_id, job.name, request.partition_key, result.success))
        launched += 1
    if data.cursor is not None:
        instance.run_storage.set_cursor_values({key: data.cursor})
    return launched


def failed_runs(ran: list[Ran]) -> list[Ran]:
    """The runs that failed (what `run --until-idle` would exit 1 for)."""
    return [r for r in ran if not r.success]
