"""``wap-pipeline``: run the local stack, provision, send events, drive the pipeline, report status."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import UTC, timedelta

import click

from wap_pipeline.cli.common import drive_until_idle
from wap_pipeline.settings import Settings

EXIT_OK = 0
EXIT_FAILED_RUNS = 1
EXIT_NOT_ACCOUNTED = 2
EXIT_NOT_IDLE = 3


def _settings() -> Settings:
    return Settings.from_env()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate the SQS -> Firehose -> S3 -> Iceberg (raw -> standardized -> curated) pipeline.

    Settings come from the environment: WAP_PROFILE (local|aws), WAP_LOCAL_PORT, WAP_STATE_DIR,
    WAP_<NAME> for resource names; the Iceberg catalog from PyIceberg's configuration.
    """


@cli.group()
def local() -> None:
    """The local AWS server (moto in server mode, a process of its own on 127.0.0.1)."""


@local.command("up")
@click.option(
    "--fresh", is_flag=True, help="Wipe the server's resources and the local state directory first."
)
def local_up(fresh: bool) -> None:
    """Start the local AWS server (or reuse the one answering on the port)."""
    from wap_pipeline import local_stack
    from wap_pipeline.state import wipe_local_state

    settings = _settings()
    status = local_stack.up(settings)
    if fresh:
        local_stack.reset(settings)
        wipe_local_state(settings)
        click.echo(f"wiped local AWS resources and {settings.state_path}")
    click.echo(status.describe())


@local.command("down")
def local_down() -> None:
    """Stop the local AWS server started by `local up`."""
    from wap_pipeline import local_stack

    stopped = local_stack.down(_settings())
    click.echo("local AWS server stopped" if stopped else "no local AWS server of ours was running")


@local.command("status")
def local_status() -> None:
    """Is the local AWS server answering?"""
    from wap_pipeline import local_stack

    status = local_stack.status(_settings())
    click.echo(status.describe())
    sys.exit(0 if status.running else 1)


@cli.command()
def provision() -> None:
    """Create the queues, stream, buckets and tables (idempotent)."""
    from wap_pipeline.provision import provision as do_provision

    for role, name in do_provision(_settings()).items():
        click.echo(f"{role:17} {name}")


@cli.command()
@click.option("--count", default=1000, show_default=True, help="How many events to send.")
@click.option("--wave-size", default=20, show_default=True, help="Events per wave.")
@click.option(
    "--drive/--no-drive",
    default=False,
    help="Run the pipeline (headless, as `run --until-idle`) while sending, with backpressure on the queue.",
)
@click.option(
    "--max-depth", default=20, show_default=True, help="With --drive: pause while the queue is deeper."
)
@click.option("--seed", type=int, default=None, help="Seed for reproducible events.")
@click.option(
    "--timeout", default=1800.0, show_default=True, help="With --drive: give up after this many seconds."
)
def send(count: int, wave_size: int, drive: bool, max_depth: int, seed: int | None, timeout: float) -> None:
    """Send realistic, valid events to the ingest queue."""
    import threading

    from wap_pipeline import aws
    from wap_pipeline.events import make_events
    from wap_pipeline.ingest.producer import patiently, send_in_waves
    from wap_pipeline.provision import queue_url
    from wap_pipeline.state import record_sent

    settings = _settings()
    sqs = aws.client("sqs", settings)
    url = patiently(lambda: queue_url(sqs, settings.queue_name))
    started = time.monotonic()
    progress = {"sent": 0}
    errors: list[BaseException] = []

    def on_sent(size: int) -> None:
        record_sent(settings, size)
        progress["sent"] += size
        if progress["sent"] % max(wave_size, 1000) < wave_size or progress["sent"] == count:
            click.echo(f"sent {progress['sent']}/{count}")

    def produce() -> None:
        try:
            send_in_waves(
                sqs,
                url,
                count,
                wave_size,
                lambda wave, size: make_events(size, seed=None if seed is None else seed + wave),
                on_sent,
                max_depth=max_depth if drive else None,
            )
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    if not drive:
        produce()
        failures, idle = 0, True
    else:
        producer = threading.Thread(target=produce, name="wap-producer", daemon=True)
        producer.start()
        result = drive_until_idle(settings, timeout, quiet=True, producer_active=producer.is_alive)
        failures, idle = len(result.failed), result.idle
        producer.join(timeout=5)
    if errors:
        raise click.ClickException(f"sending stopped after {progress['sent']} events: {errors[0]}")
    click.echo(f"sent {progress['sent']} events in {time.monotonic() - started:.1f}s")
    if failures:
        sys.exit(EXIT_FAILED_RUNS)
    if not idle:
        click.echo(f"pipeline not idle after {timeout:.0f}s", err=True)
        sys.exit(EXIT_NOT_IDLE)


@cli.command()
@click.option("--until-idle", is_flag=True, required=True, help="Stop when nothing is left to do.")
@click.option("--timeout", default=900.0, show_default=True, help="Give up after this many seconds.")
def run(until_idle: bool, timeout: float) -> None:
    """Evaluate the sensors and execute the runs they request, headless, until idle."""
    result = drive_until_idle(_settings(), timeout)
    if result.failed:
        sys.exit(EXIT_FAILED_RUNS)
    if not result.idle:
        click.echo(f"not idle after {timeout:.0f}s", err=True)
        sys.exit(EXIT_NOT_IDLE)


def _operator():
    """Who runs an operator verb (WAP_OPERATOR, else the login name), for the audit log."""
    from wap_pipeline.operations.actions import Operator
    from wap_pipeline.resources.breaker import operator_name

    return Operator(_settings(), os.environ.get("WAP_OPERATOR") or operator_name())


_REASON = click.option("--reason", default="", help="Why (recorded in the operator audit log).")


@cli.command()
@click.option("--partition", "partitions", multiple=True, help="Only this batch (repeatable).")
@click.option("--then-run/--no-then-run", default=True, help="Afterwards, run until idle.")
@_REASON
def redrive(partitions: tuple[str, ...], then_run: bool, reason: str) -> None:
    """Re-execute failed batches from failure, headless (oldest first).

    Completed steps are not redone; a batch already published is not re-applied. Runs whose process
    died are marked failed first. Reset the breaker before re-driving.
    """
    from dagster import DagsterInstance

    from wap_pipeline.runner import redrive as do_redrive
    from wap_pipeline.state import ensure_dagster_home

    scope = {"partitions": list(partitions) or "all failed", "then_run": then_run}
    with _operator().acting("pipeline.redrive", _settings().pipeline_name, reason, scope) as outcome:
        if then_run:
            result = drive_until_idle(_settings(), redrive_first=True, partitions=list(partitions) or None)
            outcome.update(run_ids=result.run_ids, failed=result.failed)
            sys.exit(EXIT_FAILED_RUNS if result.failed else EXIT_OK)
        ensure_dagster_home(_settings())
        with DagsterInstance.get() as instance:
            report = do_redrive(instance, list(partitions) or None, log=click.echo)
        outcome.update(runs=len(report.runs), failed=len(report.failed))
        if not report.runs:
            click.echo("no failed batches to re-drive")
        sys.exit(EXIT_FAILED_RUNS if report.failed else EXIT_OK)


@cli.command()
@click.option("--partition", "partitions", multiple=True, required=True, help="The batch (repeatable).")
@_REASON
def rerun(partitions: tuple[str, ...], reason: str) -> None:
    """Materialize batches again from the first step, whether or not they succeeded, headless.

    What "Materialize selected partition" does in the UI. A batch already published changes no table
    (every step finds it in its table's ledger, even after its snapshots were expired); a failed or
    half-done one is completed. Exit 1 when a run fails, 3 when the breaker is RED or a batch has no
    manifest.
    """
    from botocore.exceptions import ClientError
    from dagster import DagsterInstance

    from wap_pipeline import aws
    from wap_pipeline.ingest.landing import manifest_key
    from wap_pipeline.runner import UnknownBatchError
    from wap_pipeline.runner import rerun as do_rerun
    from wap_pipeline.state import ensure_dagster_home

    settings = _settings()
    state = _breaker().state()
    if state.is_red:
        click.echo(f"breaker {state.pipeline} is RED ({state.reason[:200]}); reset it first", err=True)
        sys.exit(EXIT_NOT_IDLE)
    s3 = aws.client("s3", settings)

    def batch_exists(batch_id: str) -> bool:
        try:
            s3.head_object(
                Bucket=settings.landing_bucket, Key=manifest_key(settings.manifests_prefix, batch_id)
            )
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    ensure_dagster_home(settings)
    with _operator().acting(
        "pipeline.rerun", settings.pipeline_name, reason, {"partitions": list(partitions)}
    ) as outcome:
        with DagsterInstance.get() as instance:
            try:
                report = do_rerun(instance, list(partitions), batch_exists, log=click.echo)
            except UnknownBatchError as error:
                click.echo(str(error), err=True)
                sys.exit(EXIT_NOT_IDLE)
        outcome.update(run_ids=[r.run_id for r in report.runs], failed=len(report.failed))
        sys.exit(EXIT_FAILED_RUNS if report.failed else EXIT_OK)


@cli.command()
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Expire snapshots older than this (e.g. 7d, 12h, 30m, 0s).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_REASON
def maintain(older_than: str, dry_run: bool, as_json: bool, reason: str) -> None:
    """Table maintenance: expire snapshots, remove finished audit branches, delete orphan files, compact.

    Safe while the pipeline runs: no decision reads history (each table's head carries its ledger), and
    the commits of batches a later step has not taken yet are kept whatever their age. Orphan files
    younger than an hour are never deleted. Also the daily `daily_table_maintenance` Dagster schedule.
    """
    from datetime import datetime

    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.lease import writing_to
    from wap_pipeline.iceberg.schemas import load_tables
    from wap_pipeline.operations.maintenance import LAYERS
    from wap_pipeline.operations.maintenance import maintain as do_maintain
    from wap_pipeline.resources import AwsResource, settings_resource

    settings = _settings()
    scope = {"older_than": older_than, "dry_run": dry_run}
    # A writer of every table: it waits for, then holds, their leases (a dry run only reads).
    leased = (
        contextlib.nullcontext(None) if dry_run else writing_to(settings, "wap-pipeline maintain", *LAYERS)
    )
    with _operator().acting("tables.maintain", "all tables", reason, scope) as outcome, leased as held:
        report = do_maintain(
            held or load_tables(load_wap_catalog(settings)),
            AwsResource(config=settings_resource(settings)).batch_ids_after,
            datetime.now(UTC),
            older_than=parse_duration(older_than),
            dry_run=dry_run,
            unfinished_branch_retention_ms=settings.abandoned_branch_retention_ms,
            compact_min_files=settings.curated_compact_min_files,
        )
        outcome.update(report.as_dict())
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    verb = "would" if dry_run else "did"
    for table in report.tables:
        held = f" (kept from batch {table.held_by}, not yet taken by the next layer)" if table.held_by else ""
        click.echo(
            f"{table.table}: {verb} expire {len(table.snapshots_expired)} snapshot(s){held}, remove "
            f"{len(table.branches_removed)} branch(es), delete {len(table.orphan_files)} orphan file(s) "
            f"({table.orphan_bytes} bytes)"
        )
    if report.compacted_days:
        click.echo(
            f"curated.events: {verb} compact {len(report.compacted_days)} day(s) {report.compacted_files}"
        )


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s`` -> a timedelta."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    try:
        amount, unit = float(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise click.BadParameter(f"{text!r}: a number and one of d, h, m, s (e.g. 7d)") from None
    if amount < 0:
        raise click.BadParameter(f"{text!r}: must not be negative")
    return timedelta(**{unit: amount})


@cli.command()
@click.option("--adopt", is_flag=True, help="Batch the files no manifest names (write their manifests).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_REASON
def reconcile(adopt: bool, as_json: bool, reason: str) -> None:
    """Landed files that no batch manifest names (an S3 notification was lost), and, with --adopt,
    their batching: the landing sensor then runs them like any batch.

    Looks at files landed in the last WAP_RECONCILE_WINDOW_HOURS and older than
    WAP_RECONCILE_AFTER_MINUTES. Exit 0 when every file is in a manifest (or was adopted), 1 when some are not.
    """
    from datetime import datetime

    from wap_pipeline import aws
    from wap_pipeline.ingest.reconcile import adopt as adopt_files
    from wap_pipeline.ingest.reconcile import unannounced

    settings = _settings()
    s3, now = aws.client("s3", settings), datetime.now(UTC)
    missing = unannounced(s3, settings, now)
    adopted = []
    if adopt and missing:
        scope = {"files": [o.key for o in missing]}
        with _operator().acting("landing.adopt", settings.landing_bucket, reason, scope) as outcome:
            adopted = adopt_files(s3, settings, missing, now)
            outcome["batches"] = [m.batch_id for m in adopted]
    if as_json:
        document = {"unbatched": [o.key for o in missing], "adopted_batches": [m.batch_id for m in adopted]}
        click.echo(json.dumps(document, indent=2))
    else:
        for landed in missing:
            click.echo(f"{landed.key}\t{landed.size} bytes\tlanded {landed.last_modified.isoformat()}")
        for manifest in adopted:
            click.echo(f"adopted as batch {manifest.batch_id} ({len(manifest.files)} file(s))")
        if not missing:
            click.echo("every landed file is in a batch")
    sys.exit(EXIT_OK if not missing or adopted else EXIT_FAILED_RUNS)


@cli.command("rerun-failed")
@click.option("--partition", "partitions", multiple=True, help="Only this batch (repeatable).")
@click.option(
    "--url",
    envvar="WAP_DAGSTER_URL",
    default="http://127.0.0.1:3000",
    show_default=True,
    help="The Dagster webserver (env WAP_DAGSTER_URL).",
)
@click.option("--wait/--no-wait", default=True, help="Wait for each run; stop at the first that fails.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds to wait for each run.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_REASON
def rerun_failed(
    partitions: tuple[str, ...], url: str, wait: bool, timeout: float, as_json: bool, reason: str
) -> None:
    """Re-execute failed batches from failure through the Dagster webserver (GraphQL).

    The same as "Re-execute from failure" in the UI: only the steps that did not succeed run again
    (a batch that failed in curated re-runs curated, not standardized). Batches whose newest run
    succeeded are not touched. Exit 0 when every re-execution succeeded, 1 when one failed, 3 when the
    webserver is unreachable or the breaker is RED (reset it first). Without a webserver, use
    `wap-pipeline redrive` (headless).
    """
    from wap_pipeline.webserver import DagsterWebserver, WebserverError, rerun_failed

    state = _breaker().state()
    if state.is_red:
        click.echo(
            f"breaker {state.pipeline} is RED ({state.reason[:200]}); re-executed runs would stop at once. "
            "Reset it first: wap-pipeline breaker reset --reason '...'",
            err=True,
        )
        sys.exit(EXIT_NOT_IDLE)
    api = DagsterWebserver(url)
    if not api.reachable():
        click.echo(
            f"no Dagster webserver at {url} (start one with `make dev`, or re-drive headless with "
            "`wap-pipeline redrive`)",
            err=True,
        )
        sys.exit(EXIT_NOT_IDLE)
    echo = (lambda message: None) if as_json else click.echo
    scope = {"partitions": list(partitions) or "all failed", "webserver": url}
    with _operator().acting("pipeline.rerun-failed", _settings().pipeline_name, reason, scope) as outcome:
        try:
            reruns = rerun_failed(api, list(partitions) or None, wait=wait, timeout_s=timeout, log=echo)
        except WebserverError as error:
            click.echo(str(error), err=True)
            sys.exit(EXIT_NOT_IDLE)
        outcome["runs"] = [{"partition": r.partition, "run_id": r.run_id} for r in reruns]
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in reruns], indent=2))
    elif not reruns:
        click.echo("no failed batches to re-execute")
    failed = wait and any(not r.succeeded for r in reruns)
    sys.exit(EXIT_FAILED_RUNS if failed else EXIT_OK)


@cli.group()
def branches() -> None:
    """Audit branches of the standardized table."""


@branches.command("list")
def branches_list() -> None:
    """Every audit branch, whether it was published, and the retention of abandoned ones."""
    from datetime import datetime

    from wap_pipeline.iceberg import wap
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import load_tables

    table = load_tables(load_wap_catalog(_settings()))["standardized"]
    on_main = {s.snapshot_id for s in wap.history(table.metadata, table.current_snapshot())}
    for name, ref in sorted(table.metadata.refs.items()):
        if not name.startswith(wap.BRANCH_PREFIX):
            continue
        abandoned = table.metadata.properties.get(f"{wap.ABANDONED_PROPERTY_PREFIX}{name}")
        if ref.snapshot_id in on_main:
            state = "published"
        elif abandoned:
            expires_ms, _, reason = abandoned.partition("|")
            expires = datetime.fromtimestamp(int(expires_ms) / 1000, tz=UTC).isoformat(timespec="seconds")
            state = f"abandoned until {expires}: {reason}"
        else:
            state = "not published (its run did not finish)"
        click.echo(f"{name}\t{state}")


@branches.command("cleanup")
@_REASON
def branches_cleanup(reason: str) -> None:
    """Remove abandoned branches whose retention has passed (also a daily Dagster schedule)."""
    from wap_pipeline.iceberg import wap
    from wap_pipeline.iceberg.lease import writing_to

    settings = _settings()
    with (
        _operator().acting("branches.cleanup", "standardized/events", reason) as outcome,
        writing_to(settings, "wap-pipeline branches cleanup", "standardized") as tables,
    ):
        outcome["removed"] = removed = wap.remove_expired_branches(
            tables["standardized"], unfinished_retention_ms=settings.abandoned_branch_retention_ms
        )
    click.echo(f"removed {len(removed)} branch(es)" + (f": {', '.join(removed)}" if removed else ""))


@cli.group()
def schema() -> None:
    """Inspect and evolve the standardized / curated schemas."""


_COLUMN_TYPES = {
    "string": "StringType",
    "long": "LongType",
    "int": "IntegerType",
    "double": "DoubleType",
    "boolean": "BooleanType",
    "timestamptz": "TimestamptzType",
}


@schema.command("show")
def schema_show() -> None:
    """Print the schemas of the three tables."""
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import load_tables

    for layer, table in load_tables(load_wap_catalog(_settings())).items():
        click.echo(f"{layer}: {table.schema()}")


@schema.command("add-column")
@click.argument("name")
@click.argument("column_type", type=click.Choice(sorted(_COLUMN_TYPES)))
@click.option("--doc", default=None, help="Column documentation.")
@_REASON
def schema_add_column(name: str, column_type: str, doc: str | None, reason: str) -> None:
    """Add an optional producer field to standardized and curated (FMEA 2.1's schema fix).

    Then reset the breaker and re-drive: the same landing files are processed again.
    """
    import pyiceberg.types

    from wap_pipeline.iceberg.lease import writing_to

    iceberg_type = getattr(pyiceberg.types, _COLUMN_TYPES[column_type])()
    with (
        _operator().acting("schema.add-column", name, reason, {"type": column_type}) as outcome,
        writing_to(_settings(), "wap-pipeline schema add-column", "standardized", "curated") as tables,
    ):
        outcome["added_to"] = added = []
        for layer in ("standardized", "curated"):
            table = tables[layer]
            if name in [f.name for f in table.schema().fields]:
                click.echo(f"{layer}: column {name} already exists")
                continue
            with table.update_schema() as update:
                update.add_column(name, iceberg_type, doc=doc)
            added.append(layer)
            click.echo(f"{layer}: added optional column {name} {column_type}")


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True, help="Exit 2 unless every sent message is accounted for.")
def status(as_json: bool, check: bool) -> None:
    """Where every message is, overall and per batch, and whether the accounting identity holds.

    Per batch: landed = quarantined + published; published = inserted + superseded + skipped.
    Overall, per message id from the pipeline's own records: forwarded = landed = published + masked
    (the identity under WAP_PROFILE=aws, or without a sender's ledger); with the local ledger, also
    sent = curated + quarantined (without a replay in curated) + DLQ. Both with an empty queue.
    """
    from wap_pipeline.status import collect

    current = collect(_settings())
    m = current.messages
    if as_json:
        click.echo(json.dumps(current.as_dict(), indent=2, default=str))
    else:
        rows = [
            ("messages sent", current.messages_sent),
            ("files landed", current.files_landed),
            ("landed records (raw rows)", current.raw_rows),
            ("queue depth / in flight", f"{current.queue_depth} / {current.queue_in_flight}"),
            ("DLQ depth (purged by operators, recorded)", f"{current.dlq_depth} ({current.dlq_purged})"),
            (
                "quarantined ids (replayed into curated)",
                f"{current.quarantined} ({current.quarantined_replayed})",
            ),
            ("rows masked by the quarantine", current.masked_rows),
            ("replay claims without data-patcher's grant (ignored)", current.unauthorized_replays),
            ("invalid rows (failed audits, unpublished)", current.invalid_rows),
            ("published to standardized (main)", current.standardized_rows),
            ("rows in curated", current.curated_rows),
            ("batches published", current.batches_published),
            (
                "breaker",
                current.breaker + (f" ({current.breaker_reason[:80]})" if current.breaker_reason else ""),
            ),
            ("bookmark", (current.bookmark or {}).get("batch_id", "-")),
            ("accounted (curated+quarantine+DLQ+purged)", f"{current.accounted} of {current.messages_sent}"),
            (
                "forwarded / landed / published / masked (receipts)",
                f"{m.forwarded} / {m.landed} / {m.published} / {m.masked}",
            ),
            (
                "forwarded not landed / landed not forwarded / lost",
                f"{len(m.not_landed)} / {len(m.not_forwarded)} / {len(m.unaccounted)}",
            ),
            ("accounted by the pipeline's own records", "yes" if current.records_identity_holds else "NO"),
            (
                "every sent message accounted for" + ("" if current.sent_ledger else " (no sender's ledger)"),
                "yes" if current.identity_holds else "NO",
            ),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            click.echo(f"{label:<{width}}  {value}")
        if current.batches:
            header = (
                "batch",
                "landed",
                "quarant.",
                "invalid",
                "published",
                "inserted",
                "supersed.",
                "skipped",
                "ok",
                "state",
            )
            click.echo("")
            click.echo("  ".join(f"{h:>9}" if i else f"{h:<24}" for i, h in enumerate(header)))
            for b in current.batches:
                cells = (
                    b.landed,
                    b.quarantined,
                    b.invalid,
                    b.published,
                    b.inserted,
                    b.superseded,
                    b.skipped,
                    "yes" if b.identity_holds else "NO",
                )
                click.echo(
                    f"{b.batch_id:<24}  " + "  ".join(f"{_cell(c):>9}" for c in cells) + f"  {b.state}"
                )
    if check and not current.identity_holds:
        sys.exit(EXIT_NOT_ACCOUNTED)


@cli.group()
def breaker() -> None:
    """The circuit breaker of the pipeline."""


def _breaker():
    from wap_pipeline import aws
    from wap_pipeline.resources.breaker import CircuitBreaker

    settings = _settings()
    return CircuitBreaker(aws.client("dynamodb", settings), settings.breaker_table, settings.pipeline_name)


@breaker.command("status")
def breaker_status() -> None:
    """Show the breaker's state and who last changed it."""
    from dataclasses import asdict

    click.echo(json.dumps(asdict(_breaker().state()), indent=2))


@breaker.command("reset")
@click.option("--reason", required=True, help="Why it is safe to resume (recorded).")
@click.option("--operator", envvar="WAP_OPERATOR", default=None, help="Who resets it [default: login name].")
def breaker_reset(reason: str, operator: str | None) -> None:
    """Set the breaker GREEN (recorded in the breaker and the operator audit log)."""
    from wap_pipeline.operations.actions import Operator
    from wap_pipeline.resources.breaker import operator_name

    state = Operator(_settings(), operator or operator_name()).reset_breaker(reason)
    click.echo(
        f"breaker {state.pipeline} is {state.status} (reset by {state.reset_by}: {state.reset_reason})"
    )


@cli.command()
@click.option("--port", default=3000, show_default=True)
def dev(port: int) -> None:
    """Start `dagster dev` on 127.0.0.1 against the same state (the local stack must be up)."""
    from wap_pipeline.state import ensure_dagster_home, repository_root

    ensure_dagster_home(_settings())
    workspace = repository_root() / "workspace.yaml"
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    os.execv(dagster, [dagster, "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    cli()
