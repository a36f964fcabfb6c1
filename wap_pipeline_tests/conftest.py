"""Shared fixtures: a real local AWS server started by the suite, and a fresh stack per test.

The server is moto in server mode, started through the project's own `local_stack` module on a free
port. Clients reach it through the standard ``AWS_ENDPOINT_URL`` variable -- the same code path a
real deployment uses with ``WAP_PROFILE=aws``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from wap_pipeline import local_stack
from wap_pipeline.engines.standalone import SparkCluster
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import create_tables
from wap_pipeline.provision import provision
from wap_pipeline.settings import Settings
from wap_pipeline_tests import hooks

# The tests' hooks plugin (failpoints, the AWS call log) in this process and every one it starts.
hooks.enable()


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


@pytest.fixture
def postgres_catalog(
    stack: Settings, postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The pipeline's Iceberg catalog moved to a fresh PostgreSQL database (configuration only) and
    provisioned there, as `wap-pipeline provision` would with this configuration; yields its URL."""
    monkeypatch.setenv("PYICEBERG_CATALOG__WAP__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__WAP__URI", postgres_database)
    monkeypatch.setenv("PYICEBERG_CATALOG__WAP__WAREHOUSE", f"file://{tmp_path}/pg-warehouse")
    create_tables(load_wap_catalog(Settings.from_env()))
    return postgres_database
