"""Shared fixtures: a real local AWS server started by the suite, and a fresh stack per test.

The server is moto in server mode, started through the project's own `local_stack` module on a free
port. Clients reach it through the standard ``AWS_ENDPOINT_URL`` variable -- the same code path a
real deployment uses with ``WAP_PROFILE=aws``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

import wap_pipeline
from wap_pipeline import local_stack
from wap_pipeline.provision import provision
from wap_pipeline.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def aws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One moto server process for the whole session, stopped by PID at the end."""
    state = tmp_path_factory.mktemp("server-state")
    settings = Settings(local_port=free_port(), state_dir=str(state))
    local_stack.up(settings)
    yield settings
    local_stack.down(settings)


@pytest.fixture
def stack(aws_server: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A wiped and freshly provisioned AWS stack, and an empty state directory (catalog, Dagster home)."""
    local_stack.reset(aws_server)
    state = tmp_path / "state"
    monkeypatch.setenv("WAP_PROFILE", "local")
    monkeypatch.setenv("WAP_LOCAL_PORT", str(aws_server.local_port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.local_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("WAP_STATE_DIR", str(state))
    monkeypatch.setenv("DAGSTER_HOME", str(state / "dagster_home"))
    # Steps retry transient errors; tests that do not simulate an outage need not wait long.
    monkeypatch.setenv("WAP_STEP_RETRY_DELAY_S", "0.2")
    # No webserver unless a test starts one (a developer's `make dev` on :3000 must not be used).
    monkeypatch.setenv("WAP_DAGSTER_URL", f"http://127.0.0.1:{free_port()}")
    for name in list(os.environ):
        if name.startswith("PYICEBERG_CATALOG__"):
            monkeypatch.delenv(name)
    settings = Settings.from_env()
    provision(settings)
    return settings


class SparkCluster:
    """A standalone Spark master and one worker on 127.0.0.1, started from the installed pyspark."""

    def __init__(self, root: Path, cores: int = 2, memory: str = "1g"):
        import pyspark

        self.root = root
        self.home = Path(pyspark.__file__).parent
        self.port, self.ui_port, self.worker_ui_port = free_port(), free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.work_dir = root / "work"
        self.cores, self.memory = cores, memory
        self.processes: list[subprocess.Popen] = []

    def _env(self) -> dict[str, str]:
        package_root = str(Path(wap_pipeline.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        return {
            **os.environ,
            "SPARK_HOME": str(self.home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            # Executors run the rules in this interpreter, importing this checkout of the package.
            "PYSPARK_PYTHON": sys.executable,
            "PYTHONPATH": path,
        }

    def _start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes.append(
            subprocess.Popen(
                [str(self.home / "bin" / "spark-class"), *args],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as response:
            return json.load(response)

    def _wait(self, what: str, ready, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited ({process.args}); see {self.root}/*.log")
            try:
                if ready(self.status()):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Spark standalone {what} not ready in {timeout_s}s; see {self.root}/*.log")

    def start(self) -> SparkCluster:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--webui-port", str(self.ui_port),
        )  # fmt: skip
        self._wait("master", lambda status: status.get("status") == "ALIVE")
        self._start(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            self.url,
            "--host", "127.0.0.1",
            "--cores", str(self.cores),
            "--memory", self.memory,
            "--webui-port", str(self.worker_ui_port),
            "--work-dir", str(self.work_dir),
        )  # fmt: skip
        self._wait("worker", lambda status: any(w["state"] == "ALIVE" for w in status.get("workers", [])))
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):  # the worker first, then the master (by their PIDs)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A standalone cluster (master + one worker, 2 cores, 1 GB) for the session, stopped at its end."""
    cluster = SparkCluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def spark_engine_runtime(spark_cluster: SparkCluster) -> Iterator[SparkCluster]:
    """The Spark engine's runtime (WAP_ENGINE=spark), shared by the whole test session, ON A STANDALONE
    CLUSTER: ``WAP_SPARK_MASTER`` points at :func:`spark_cluster`, so the rules the engine ships run
    in the worker's executors, not in this process.

    The process's SparkContext is started by the first Spark use (one per process, built by
    dagster-pyspark's PySparkResource) and stopped here, at the end of the session. `make test`
    installs the runtime (the spark extra, scripts/ensure-spark.sh); its absence is a failure, not a skip.
    """
    from wap_pipeline.engines import spark

    try:
        spark.runtime_jars()
    except spark.SparkEngineUnavailable as error:
        pytest.fail(f"the Spark engine's runtime is not installed: {error}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WAP_SPARK_MASTER", spark_cluster.url)
        yield spark_cluster
        spark.stop_spark()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"wap_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()
