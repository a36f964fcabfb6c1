# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
WAP := $(VENV)/bin/wap-pipeline
STAMP := $(VENV)/.installed
EVENTS ?= 10000
BENCH_EVENTS ?= 1000000
BENCH_JSON ?= benchmarks/results/latest.json
PYTHON ?= python3

# Local state (SQLite catalog, warehouse, Dagster home, server pid/log) lives here.
export WAP_STATE_DIR ?= $(CURDIR)/.wap
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::UserWarning

.PHONY: install spark demo test test-clocks chaos chaos-ingest bench bench-spark lint format dev services browser faketime clean lambda-package

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,spark,local]'
	touch $@

# The Spark engine (WAP_ENGINE=spark) is installed too: the `spark` extra above (pyspark, the Iceberg
# runtime jar) and, from Debian, Java and the JDBC drivers of Iceberg's JDBC catalog (idempotent).
install: $(STAMP) spark

spark:
	scripts/ensure-spark.sh

## Run the whole pipeline end to end on the local stack; exit 0 only if every event is accounted for.
demo: install
	$(WAP) local up --fresh
	$(WAP) provision
	$(WAP) send --count $(EVENTS) --drive
	$(WAP) run --until-idle
	$(WAP) status --check

## The whole test suite (lint first), after the unit tests under shifted clocks. .ci/run runs exactly this.
## Whole files per worker (--dist loadfile): the Spark tests share one standalone cluster. (--dist loadgroup
## does not group under pytest 9 with xdist 3.8: each worker started a cluster of its own.)
test: install spark services browser faketime lint test-clocks
	$(PY) -m pytest -n 4 --dist loadfile

## The unit tests with the process clock 400 days ahead, just after New Year's midnight UTC, on a leap day.
test-clocks: install faketime
	PY=$(PY) scripts/test-clocks.sh

## Chaos suite: SCHEDULES seeded fault schedules (kill -9, throttling, partial puts, blackouts,
## duplicates; recovery by documented commands; invariants checked). Reproduce one schedule with
## `.venv/bin/python -m wap_pipeline_tests.chaos --schedules 1 --seed S -v`.
SCHEDULES ?= 100
SEED ?= 1
JOBS ?= 6
chaos: install
	$(PY) -m wap_pipeline_tests.chaos --schedules $(SCHEDULES) --seed $(SEED) --jobs $(JOBS)

## Ingestion fault test at full size: 5,000 messages through 30 % throttling and partial failures, outages.
## About 20 minutes here: botocore's backoff sleeps dominate (measured 5,000 messages in 1,084 s).
chaos-ingest: install services
	WAP_FAULTED_MESSAGES=5000 $(PY) -m pytest -p no:cacheprovider -o timeout=5400 \
		wap_pipeline_tests/integration/test_ingest_faults.py

## The pipeline against the physical floor on this machine (ratios within one run; see benchmarks/README.md).
## Under 10 minutes on 2 cores at 1,000,000 events; `make bench BENCH_EVENTS=100000` for a quicker look.
bench: install
	$(PY) benchmarks/run.py --events $(BENCH_EVENTS) --json $(BENCH_JSON)

## The Spark engine on a local standalone cluster (master + worker started here): whole batch vs the floor,
## driver peak RSS, executor time, at 1M and 3M events (~15 minutes on 2 cores; see benchmarks/README.md).
## `make bench-spark BENCH_SPARK_EVENTS=20000,60000` for a quick look.
BENCH_SPARK_EVENTS ?= 1000000,3000000
bench-spark: install
	$(PY) benchmarks/spark.py --events $(BENCH_SPARK_EVENTS) --json benchmarks/results/spark-latest.json

lint: install
	$(VENV)/bin/ruff check wap_pipeline wap_pipeline_tests benchmarks
	$(VENV)/bin/ruff format --check wap_pipeline wap_pipeline_tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix wap_pipeline wap_pipeline_tests benchmarks
	$(VENV)/bin/ruff format wap_pipeline wap_pipeline_tests benchmarks

## The DLQ auto-fix Lambda's deployment zip: wap_pipeline and the pure-Python packages its handler imports;
## compiled ones are listed for a layer (see scripts/lambda_package.py and docs/deploy.md).
lambda-package: install
	$(PY) scripts/lambda_package.py --out dist/dlq-autofix-lambda.zip

services:
	scripts/ensure-services.sh

## Debian's chromium for the UI tests (apt, only when missing).
browser:
	scripts/ensure-browser.sh

## Debian's faketime (libfaketime) for the shifted-clock runs (apt, only when missing).
faketime:
	scripts/ensure-debian-package.sh faketime faketime "for the shifted-clock test runs"

## The same stack with `dagster dev` on http://127.0.0.1:3000.
dev: install
	$(WAP) local up
	$(WAP) provision
	$(WAP) dev --port 3000

clean:
	-$(WAP) local down
	rm -rf $(WAP_STATE_DIR) .pytest_cache
