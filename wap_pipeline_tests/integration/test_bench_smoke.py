"""`make bench` works: the runner at a tiny size prints every line the issue asks for and writes its
JSON. Structure only -- speed is measured by the benchmark itself, never asserted in a test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[\d,]+(\.\d+)?"


def test_bench_runner_prints_every_measure_and_a_verdict_per_target(tmp_path):
    output = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--events", "2000",
        "--quarantined", "200",
        "--growth-batches", "2",
        "--growth-events", "100",
        "--ingest-messages", "60",
        "--latency-events", "10",
        "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()

    stages = (
        "raw append",
        "standardized",
        "curated",
        "keys unique check",
        "row accounting check",
        "daily totals",
    )
    for stage in ("floor", *stages, "whole batch"):
        pattern = rf"{stage}: {NUMBER} s, {NUMBER} rows/s, {NUMBER}x floor"
        assert any(re.match(pattern, line) for line in lines), f"no '{stage}' line in:\n{result.stdout}"
    for measure in ("peak RSS:", "WAP overhead:", "growth:", "ingest:", "latency:"):
        assert any(line.startswith(measure) for line in lines), f"no '{measure}' line in:\n{result.stdout}"
    verdicts = [line.split()[0] for line in lines if re.match(r"\s+(PASS|MISS) ", line)]
    assert len(verdicts) == 5

    results = json.loads(output.read_text())
    assert results["main"]["rows"]["raw"] == 2000
    assert results["main"]["rows"]["curated"] == results["main"]["rows"]["standardized"] > 0
    assert set(results["main"]["run"]["steps"]) == set(stages)
    assert results["growth"]["batches"] == 2
    assert results["latency"]["events"] == 10
    assert [t["met"] for t in results["targets"]] == [v == "PASS" for v in verdicts]
