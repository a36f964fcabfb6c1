"""A standalone Spark cluster on this machine: a master and one worker from the installed pyspark.

What the tests and ``make bench-spark`` run the Spark engine on (``WAP_SPARK_MASTER=<cluster.url>``),
so the rules the engine ships run in the worker's executors -- JVMs of their own, with Python workers of
this interpreter -- not in the driver. Everything listens on 127.0.0.1, on free ports; the daemons are
stopped by their PIDs.

    with SparkCluster(Path("/tmp/cluster"), cores=2, memory="2g") as cluster:
        os.environ["WAP_SPARK_MASTER"] = cluster.url

Or in the foreground, until Ctrl-C, for ``WAP_ENGINE=spark WAP_SPARK_MASTER=spark://127.0.0.1:7077
wap-pipeline run --until-idle`` in another shell:

    python -m wap_pipeline.engines.standalone --port 7077 --cores 2 --memory 2g
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import wap_pipeline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SparkCluster:
    """A standalone Spark master and one worker on 127.0.0.1, started from the installed pyspark."""

    def __init__(self, root: Path, cores: int = 2, memory: str = "1g", port: int | None = None):
        import pyspark

        self.root = root
        self.home = Path(pyspark.__file__).parent
        self.port, self.ui_port, self.worker_ui_port = port or free_port(), free_port(), free_port()
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

    def _wait(self, what: str, ready: Callable[[dict], bool], timeout_s: float = 90) -> None:
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

    def __enter__(self) -> SparkCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A standalone Spark cluster on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--port", type=int, default=7077)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--memory", default="2g")
    parser.add_argument("--dir", help="logs and the worker's work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="wap-spark-cluster-"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with SparkCluster(root, args.cores, args.memory, args.port) as cluster:
        print(
            f"WAP_SPARK_MASTER={cluster.url}  (master UI http://127.0.0.1:{cluster.ui_port}, logs in {root})"
        )
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
