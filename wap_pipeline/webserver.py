"""Re-execute failed batches through a running Dagster webserver's GraphQL API.

What the UI's "Re-execute from failure" does, from a script: the new run is a child of the failed
one, inherits its tags (so its partition), and runs only the steps that did not succeed. Which batches
to re-execute is decided by the same rule as the headless path
(:func:`wap_pipeline.runner.select_batches_to_redrive`).

Launching a run goes through Dagster's own client (``dagster_graphql.DagsterGraphQLClient``); it has
no call for listing runs, a partitioned asset's keys, re-execution from failure or a run's steps, so
those stay small queries of our own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from wap_pipeline.jobs import PIPELINE_JOB
from wap_pipeline.runner import CODE_LOCATION, PARTITION_TAG, SINGLETON_REPOSITORY, select_batches_to_redrive

DEFAULT_URL = "http://127.0.0.1:3000"
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
_PAGE = 100

_RUNS = """
query Runs($filter: RunsFilter, $cursor: String, $limit: Int) {
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}"""
_PARTITIONS = """
query Partitions($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode { partitionKeys }
  }
}"""
_REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}"""
_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status stepKeysToExecute } ... on Error { message } }
}"""


class WebserverError(RuntimeError):
    """The webserver is unreachable or answered with an error."""


@dataclass
class Rerun:
    partition: str
    parent_run_id: str | None
    run_id: str
    status: str = "QUEUED"
    steps: list[str] | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


class DagsterWebserver:
    """A thin GraphQL client: one method per question or action we need."""

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        parts = urlsplit(self.url)
        self._client = DagsterGraphQLClient(
            parts.hostname or "127.0.0.1",
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=int(timeout_s),
            path_prefix=parts.path,
        )

    def reachable(self) -> bool:
        try:
            return requests.get(f"{self.url}/server_info", timeout=5).ok
        except requests.RequestException:
            return False

    def _query(self, query: str, variables: dict) -> dict:
        try:
            response = requests.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=self.timeout_s
            )
        except requests.RequestException as error:
            raise WebserverError(f"Dagster webserver at {self.url} unreachable: {error}") from error
        if not response.ok:
            raise WebserverError(f"Dagster webserver at {self.url} answered HTTP {response.status_code}")
        body = response.json()
        if body.get("errors"):
            raise WebserverError(f"GraphQL error: {body['errors'][0].get('message')}")
        return body["data"]

    def latest_run_by_partition(self, job_name: str = PIPELINE_JOB) -> dict[str, dict]:
        """The newest run (runId, status) of each partition of ``job_name``."""
        latest: dict[str, dict] = {}
        cursor = None
        while True:
            data = self._query(
                _RUNS, {"filter": {"pipelineName": job_name}, "cursor": cursor, "limit": _PAGE}
            )["runsOrError"]
            if data["__typename"] != "Runs":
                raise WebserverError(f"listing runs failed: {data.get('message')}")
            results = data["results"]
            for run in results:  # newest first
                tags = {t["key"]: t["value"] for t in run["tags"]}
                if PARTITION_TAG in tags:
                    latest.setdefault(tags[PARTITION_TAG], run)
            if len(results) < _PAGE:
                return latest
            cursor = results[-1]["runId"]

    def partition_keys(self, asset_path: list[str]) -> list[str]:
        data = self._query(_PARTITIONS, {"path": asset_path})["assetNodeOrError"]
        if data["__typename"] != "AssetNode":
            raise WebserverError(f"asset {'/'.join(asset_path)} not found on the webserver")
        return list(data["partitionKeys"] or [])

    def reexecute_from_failure(self, parent_run_id: str) -> str:
        result = self._query(_REEXECUTE, {"parentRunId": parent_run_id})["launchRunReexecution"]
        if result["__typename"] != "LaunchRunSuccess":
            raise WebserverError(f"re-execution of {parent_run_id} refused: {result.get('message')}")
        return result["run"]["runId"]

    def launch_partition(self, partition: str, job_name: str = PIPELINE_JOB) -> str:
        try:
            return self._client.submit_job_execution(
                job_name,
                repository_location_name=CODE_LOCATION,
                repository_name=SINGLETON_REPOSITORY,
                tags={PARTITION_TAG: partition},
            )
        except DagsterGraphQLClientError as error:
            reason = error.__cause__ or ": ".join(str(arg) for arg in error.args)  # not the whole query
            raise WebserverError(f"launching {job_name} for {partition} refused: {reason}") from error

    def run_status(self, run_id: str) -> tuple[str, list[str] | None]:
        data = self._query(_STATUS, {"runId": run_id})["runOrError"]
        if data["__typename"] != "Run":
            raise WebserverError(f"run {run_id}: {data.get('message')}")
        return data["status"], data["stepKeysToExecute"]

    def wait(self, run_id: str, timeout_s: float, poll_s: float = 1.0) -> tuple[str, list[str] | None]:
        deadline = time.monotonic() + timeout_s
        while True:
            status, steps = self.run_status(run_id)
            if status in TERMINAL or time.monotonic() > deadline:
                return status, steps
            time.sleep(poll_s)


def rerun_failed(
    api: DagsterWebserver,
    partitions: list[str] | None = None,
    wait: bool = True,
    timeout_s: float = 900.0,
    log: Callable[[str], None] = lambda message: None,
) -> list[Rerun]:
    """Re-execute, from failure, the failed batches (oldest first); launch batches never run.

    With ``wait``, each run is awaited and the first that fails again stops the rest (the breaker
    would fail them anyway). Without, all are launched and left to the run queue.
    """
    from wap_pipeline.assets.raw import RAW_KEY

    latest = api.latest_run_by_partition()
    known = api.partition_keys(list(RAW_KEY.path))
    todo = select_batches_to_redrive(known, {k: r["status"] for k, r in latest.items()}, partitions)
    reruns = []
    for partition in todo:
        parent = latest.get(partition)
        if parent is not None:
            rerun = Rerun(partition, parent["runId"], api.reexecute_from_failure(parent["runId"]))
            log(f"{partition}: re-executing failed run {parent['runId']} from failure -> run {rerun.run_id}")
        else:
            rerun = Rerun(partition, None, api.launch_partition(partition))
            log(f"{partition}: never run; launched run {rerun.run_id}")
        reruns.append(rerun)
        if not wait:
            continue
        rerun.status, rerun.steps = api.wait(rerun.run_id, timeout_s)
        log(f"{partition}: run {rerun.run_id} {rerun.status} (steps: {', '.join(rerun.steps or ['all'])})")
        if not rerun.succeeded:
            break
    return reruns
