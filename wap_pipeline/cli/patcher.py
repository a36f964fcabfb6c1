"""``data-patcher``: the support team's CLI (FMEA section 5).

Verbs so far: ``quarantine add|list|remove``, ``dlq list|show|purge|redrive``, ``breaker status``,
``resume-pipeline``, ``audit-log``.
Every action is recorded in the operator audit log. ``--json`` on the group makes output
machine-readable.

Exit codes: 0 done; 1 the pipeline failed again after a re-drive; 2 usage error; 3 refused
(a precondition does not hold, e.g. an unknown pipeline).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from wap_pipeline.cli.common import drive_until_idle
from wap_pipeline.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 3


class Context:
    def __init__(self, as_json: bool, operator: str | None):
        from wap_pipeline.resources.breaker import operator_name

        self.as_json = as_json
        self.operator_name = operator or operator_name()
        self.settings = Settings.from_env()

    def operator(self):
        from wap_pipeline.operations.actions import Operator

        return Operator(self.settings, self.operator_name)

    def emit(self, document: object, text: str) -> None:
        click.echo(json.dumps(document, indent=2, default=str) if self.as_json else text)


pass_context = click.make_pass_decorator(Context)


def confirm(yes: bool, question: str) -> None:
    """Destructive verbs go on only with --yes or an interactive 'y'; anything else is refused (exit 3)."""
    if yes:
        return
    if not sys.stdin.isatty():
        click.echo("refused: this is destructive; pass --yes (no terminal to ask on)", err=True)
        sys.exit(EXIT_REFUSED)
    try:
        agreed = click.confirm(question, default=False)
    except click.Abort:
        agreed = False
    if not agreed:
        click.echo("refused: nothing was changed", err=True)
        sys.exit(EXIT_REFUSED)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--operator", envvar="WAP_OPERATOR", default=None, help="Who acts (recorded) [default: login name]."
)
@click.pass_context
def cli(ctx: click.Context, as_json: bool, operator: str | None) -> None:
    """Support tool: quarantine records, reset the breaker and re-drive the pipeline."""
    ctx.obj = Context(as_json, operator)


@cli.group()
def quarantine() -> None:
    """Records masked from processing unless they come back as replays."""


@quarantine.command("add")
@click.argument("record_id")
@click.option("--reason", required=True, help="Why this record is quarantined (recorded).")
@pass_context
def quarantine_add(ctx: Context, record_id: str, reason: str) -> None:
    """Quarantine RECORD_ID (an event_id)."""
    entry = ctx.operator().quarantine_add(record_id, reason)
    ctx.emit(asdict(entry), f"quarantined {entry.record_id} ({entry.reason})")


@quarantine.command("list")
@pass_context
def quarantine_list(ctx: Context) -> None:
    """List quarantined records."""
    entries = ctx.operator().quarantine.entries()
    lines = [f"{e.record_id}\t{e.added_at}\t{e.added_by}\t{e.reason}" for e in entries]
    ctx.emit([asdict(e) for e in entries], "\n".join(lines) if lines else "quarantine is empty")


@quarantine.command("remove")
@click.argument("record_id")
@click.option("--reason", required=True, help="Why the record may be processed again (recorded).")
@pass_context
def quarantine_remove(ctx: Context, record_id: str, reason: str) -> None:
    """Remove RECORD_ID from the quarantine."""
    removed = ctx.operator().quarantine_remove(record_id, reason)
    ctx.emit(
        {"record_id": record_id, "removed": removed},
        f"{record_id}: {'removed' if removed else 'was not quarantined'}",
    )


@cli.group()
def dlq() -> None:
    """The dead-letter queue: messages that failed to parse `maxReceiveCount` times."""


def _dlq_url(ctx: Context) -> tuple[object, str]:
    from wap_pipeline import aws
    from wap_pipeline.provision import queue_url

    sqs = aws.client("sqs", ctx.settings)
    return sqs, queue_url(sqs, ctx.settings.dlq_name)


@dlq.command("list")
@click.option("--limit", type=int, default=None, help="At most this many messages.")
@pass_context
def dlq_list(ctx: Context, limit: int | None) -> None:
    """List DLQ messages without consuming them (they stay in the DLQ)."""
    from wap_pipeline.ingest.dlq import browse

    messages = browse(*_dlq_url(ctx), limit=limit)
    lines = [
        f"{m.message_id}\toriginal={m.original_message_id}\treceives={m.receive_count}\tsent={m.sent_at}\t{m.body[:60]!r}"
        for m in messages
    ]
    ctx.emit([m.as_dict() for m in messages], "\n".join(lines) if lines else "DLQ is empty")


@dlq.command("show")
@click.argument("message_id")
@pass_context
def dlq_show(ctx: Context, message_id: str) -> None:
    """Show one DLQ message in full (by message id or original message id)."""
    from wap_pipeline.ingest.dlq import browse

    found = [m for m in browse(*_dlq_url(ctx)) if message_id in (m.message_id, m.original_message_id)]
    if not found:
        click.echo(f"no DLQ message {message_id}", err=True)
        sys.exit(EXIT_REFUSED)
    message = found[0]
    ctx.emit(message.as_dict(), json.dumps(message.as_dict(), indent=2))


@dlq.command("purge")
@click.option("--message-id", "message_ids", multiple=True, help="Only these messages (repeatable).")
@click.option("--reason", default="confirmed garbage", show_default=True, help="Recorded in the audit log.")
@click.option("--yes", is_flag=True, help="Do it without asking.")
@pass_context
def dlq_purge(ctx: Context, message_ids: tuple[str, ...], reason: str, yes: bool) -> None:
    """Delete DLQ messages for good (recorded with their ids in the audit log)."""
    scope = f"{len(message_ids)} message(s)" if message_ids else "EVERY message"
    confirm(yes, f"Permanently delete {scope} of {ctx.settings.dlq_name}?")
    purged = ctx.operator().dlq_purge(reason, set(message_ids) or None)
    ctx.emit([m.as_dict() for m in purged], f"purged {len(purged)} message(s)")


@dlq.command("redrive")
@click.option("--message-id", "message_ids", multiple=True, help="Only these messages (repeatable).")
@click.option("--reason", default="redrive after fix", show_default=True, help="Recorded in the audit log.")
@pass_context
def dlq_redrive(ctx: Context, message_ids: tuple[str, ...], reason: str) -> None:
    """Send DLQ messages back to the ingest queue, keeping their original message id."""
    moved = ctx.operator().dlq_redrive(reason, set(message_ids) or None)
    ctx.emit(
        [{"original_message_id": m.original_message_id, "new_message_id": new} for m, new in moved],
        "\n".join(f"{m.original_message_id} -> {new}" for m, new in moved) or "DLQ is empty",
    )


@cli.group()
def breaker() -> None:
    """The circuit breaker."""


@breaker.command("status")
@pass_context
def breaker_status(ctx: Context) -> None:
    """Show the breaker: status, who tripped it and why, last reset."""
    state = ctx.operator().breaker.state()
    text = f"{state.pipeline}: {state.status}"
    if state.is_red:
        text += f"\n  tripped by {state.tripped_by} at {state.tripped_at} (batch {state.batch_id}): {state.reason}"
    if state.reset_at:
        text += f"\n  last reset by {state.reset_by} at {state.reset_at}: {state.reset_reason}"
    ctx.emit(asdict(state), text)


@cli.command("resume-pipeline")
@click.option("--pipeline", required=True, help="The pipeline to resume (e.g. standard_ingest).")
@click.option(
    "--reason", default="resumed by data-patcher", show_default=True, help="Recorded with the reset."
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@pass_context
def resume_pipeline(ctx: Context, pipeline: str, reason: str, dry_run: bool) -> None:
    """Reset the breaker to GREEN (recorded) and re-drive the failed batches from failure.

    The re-drive runs headless, the same path as `wap-pipeline redrive`: failed batches are
    re-executed from failure, oldest first, then the sensors run until the pipeline is idle.
    """
    from dagster import DagsterInstance

    from wap_pipeline.runner import batches_to_redrive
    from wap_pipeline.state import ensure_dagster_home

    if pipeline != ctx.settings.pipeline_name:
        click.echo(
            f"refused: unknown pipeline {pipeline!r} (this deployment runs {ctx.settings.pipeline_name!r})",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    operator = ctx.operator()
    if dry_run:
        ensure_dagster_home(ctx.settings)
        with DagsterInstance.get() as instance:
            todo = [key for key, _ in batches_to_redrive(instance)]
        state = operator.breaker.state()
        ctx.emit(
            {"breaker": state.status, "would_reset": state.is_red, "would_redrive": todo, "path": "headless"},
            f"dry run: breaker is {state.status}; would reset it and re-drive {len(todo)} batch(es): "
            f"{', '.join(todo) or '-'} (headless)",
        )
        return
    state = operator.reset_breaker(reason)
    if not ctx.as_json:
        click.echo(f"Circuit Breaker Reset (Status={state.status}). Re-driving {pipeline} headless.")
    result = drive_until_idle(ctx.settings, redrive_first=True, quiet=ctx.as_json)
    ctx.emit(
        {"breaker": state.status, "path": "headless", "run_ids": result.run_ids, "failed": result.failed},
        "\n".join(f"run {run_id}" for run_id in result.run_ids) or "no runs were needed",
    )
    sys.exit(EXIT_FAILED if result.failed else EXIT_OK)


@cli.command("audit-log")
@pass_context
def audit_log(ctx: Context) -> None:
    """Every recorded operator action, oldest first."""
    entries = ctx.operator().audit.entries()
    lines = [f"{e.at}\t{e.operator}\t{e.action}\t{e.target}\t{e.reason}" for e in entries]
    ctx.emit([e.as_dict() for e in entries], "\n".join(lines) if lines else "no operator actions recorded")


if __name__ == "__main__":
    cli()
