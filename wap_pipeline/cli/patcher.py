"""``data-patcher``: the support team's CLI (FMEA section 5).

Verbs: ``inspect``, ``secure-clean``, ``replay``, ``quarantine add|list|remove``,
``dlq list|show|purge|redrive|patch|edit``, ``breaker status``, ``failures``, ``resume-pipeline``,
``audit-log``.
Every action is recorded in the operator audit log. ``--json`` on the group makes output
machine-readable.

Exit codes: 0 done; 1 not done -- the pipeline failed again after a re-drive, ``inspect`` found
problems, ``secure-clean``, ``replay`` or ``dlq patch|edit`` left records invalid (listed, not injected); 2 usage error; 3 refused (a
precondition does not hold, e.g. an unknown pipeline, a missing file); 4 refused: the bucket or queue
is not on the allow-list (``WAP_PATCHER_ALLOWED_BUCKETS`` / ``WAP_PATCHER_ALLOWED_QUEUES``).
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
EXIT_NOT_ALLOWED = 4


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
    """Support tool: inspect and clean landing files, re-inject fixed records, quarantine records,
    browse the DLQ, reset the breaker and re-drive the pipeline."""
    ctx.obj = Context(as_json, operator)


class _Stream:
    """Output that goes out as it is produced: text lines, or one JSON document written piece by piece
    (so a gigabyte file's findings are never all held in memory)."""

    def __init__(self, as_json: bool, head: dict, items: str):
        self.as_json = as_json
        self.count = 0
        if as_json:
            fields = "".join(f"{json.dumps(k)}: {json.dumps(v, default=str)}, " for k, v in head.items())
            click.echo(f"{{{fields}{json.dumps(items)}: [", nl=False)

    def item(self, document: dict, text: str) -> None:
        if self.as_json:
            click.echo(("," if self.count else "") + "\n  " + json.dumps(document, default=str), nl=False)
        else:
            click.echo(text)
        self.count += 1

    def end(self, tail: dict, text: str) -> None:
        if self.as_json:
            fields = "".join(f", {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in tail.items())
            click.echo(f"\n]{fields}}}")
        else:
            click.echo(text)


def _refuse(code: int, message: str) -> None:
    click.echo(f"refused: {message}", err=True)
    sys.exit(code)


@cli.command("inspect")
@click.argument("uri")
@pass_context
def inspect(ctx: Context, uri: str) -> None:
    """Report every problem of a landing file, line by line, with the record ids involved.

    URI is s3://bucket/key (an allow-listed bucket) or a local path. The file is streamed, never
    read whole. Reported: invalid UTF-8 (byte offset), unprintable (control) characters with line and
    column -- raw, or escaped in the envelope or in the message body --, JSON errors with position,
    and what the standardized audit would flag (the pipeline's own CDE rules). Exit 1 when anything
    was found.
    """
    from wap_pipeline.operations.patching import (
        NotAllowedError,
        NotFoundError,
        open_chunks,
        parse_source,
        standardized_fields,
    )
    from wap_pipeline.rules.cleaning import InspectSummary, inspect_lines, iter_lines

    try:
        source = parse_source(uri)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="URI") from error
    summary = InspectSummary()
    try:
        with open_chunks(ctx.settings, source) as opened:
            fields, schema = standardized_fields(ctx.settings)
            out = _Stream(ctx.as_json, {"source": uri, "schema": schema}, "lines")
            # Audited against the file's landing time, as the pipeline audited its batch.
            for report in inspect_lines(iter_lines(opened.chunks), fields, summary, opened.landed_at):
                text = f"line {report.line} ({report.ids.describe()}):\n" + "\n".join(
                    f"  {problem.message}" for problem in report.problems
                )
                out.item(report.as_dict(), text)
    except NotAllowedError as error:
        _refuse(EXIT_NOT_ALLOWED, str(error))
    except NotFoundError as error:
        _refuse(EXIT_REFUSED, str(error))
    counts = ", ".join(f"{kind}={n}" for kind, n in sorted(summary.problems.items()))
    rules = ", ".join(f"{name}={n}" for name, n in sorted(summary.audit_reasons.items()))
    text = (
        f"Summary: {summary.lines} line(s), {summary.bytes} bytes, {summary.records} record(s); "
        + (
            f"{summary.lines_with_problems} line(s) with problems: {counts}"
            + (f" (audit: {rules})" if rules else "")
            if not summary.clean
            else "no problems found"
        )
        + f". Audit rules checked against the {schema}."
    )
    out.end({"summary": summary.as_dict()}, text)
    sys.exit(EXIT_OK if summary.clean else EXIT_FAILED)


@cli.command("secure-clean")
@click.argument("uri")
@click.option(
    "--remove-chars",
    required=True,
    help="Characters to remove, literally or as escapes: '\\x1F', '\\u200B', '\\t'.",
)
@click.option(
    "--re-inject-queue",
    default=None,
    help="Send the cleaned records to this (allow-listed) queue as replays.",
)
@click.option("--reason", default="secure-clean", show_default=True, help="Recorded in the audit log.")
@click.option("--dry-run", is_flag=True, help="Read, clean and validate; write and send nothing.")
@click.option(
    "--allow-key-change",
    is_flag=True,
    help="Re-inject records whose idempotency_key or event_id the cleaning changes (refused otherwise).",
)
@pass_context
def secure_clean(
    ctx: Context,
    uri: str,
    remove_chars: str,
    re_inject_queue: str | None,
    reason: str,
    dry_run: bool,
    allow_key_change: bool,
) -> None:
    """Remove characters from a landing file's records and re-inject the fixed records as replays.

    For every line the original metadata (message id, idempotency_key, event_id) is read first; then
    the characters are removed -- raw, from the envelope, from the message body -- and each changed
    record is validated again with the pipeline's rules. A record still invalid is listed and NOT
    injected. The cleaned copy of the file is stored under the patches prefix of the landing bucket
    (the source is never modified). With --re-inject-queue, each cleaned record is granted and sent
    with the attributes is_replay=true, original_message_id, idempotency_key and replay_token, and
    its original is quarantined, so that re-driving the failed batch skips the bad copy while the
    replay bypasses the quarantine. Exit 1 when a record is left invalid.

    A cleaning that changes a record's idempotency_key or event_id is refused (exit 3, the records
    listed, nothing written or sent) unless --allow-key-change: curated keeps one row per key, so the
    replay would be a new row beside the old key's row (if that was published, it stays, and the
    event counts twice in the totals).
    """
    from wap_pipeline.operations.patching import (
        KeyChangeRefused,
        NotAllowedError,
        NotFoundError,
        parse_source,
    )
    from wap_pipeline.operations.patching import secure_clean as run_secure_clean
    from wap_pipeline.rules.cleaning import INVALID, parse_chars, show_char, show_text

    try:
        source = parse_source(uri)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="URI") from error
    try:
        chars = parse_chars(remove_chars)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--remove-chars") from error
    shown = ", ".join(f"'{show_char(c)}'" for c in sorted(chars))
    head = {"source": uri, "remove_chars": [show_char(c) for c in sorted(chars)]}
    head |= {"queue": re_inject_queue, "dry_run": dry_run}
    out: _Stream | None = None
    injecting = False

    def on_record(record, new_message_id: str | None) -> None:
        nonlocal out, injecting
        if out is None:
            out = _Stream(ctx.as_json, head, "records")
        document = {**record.as_dict(), "new_message_id": new_message_id}
        if record.status == INVALID:
            text = (
                f"line {record.line} ({record.ids.describe()}): still invalid after cleaning, NOT injected: "
                + "; ".join(record.reasons)
            )
        elif new_message_id is None:
            verb = "would be injected" if dry_run else "cleaned (no --re-inject-queue: not injected)"
            text = f"line {record.line} ({record.ids.describe()}): {verb} with attributes {record.attributes}"
        else:
            key = record.attributes.get("idempotency_key")
            kept = (
                "[preserved]"
                if key == record.ids.idempotency_key
                else (f"[cleaned; was {show_text(record.ids.idempotency_key)!r}]")
            )
            text = (
                ("" if injecting else f"Injecting to SQS {re_inject_queue} with attributes:\n")
                + f"  line {record.line} -> message {new_message_id}\n"
                + f"  - is_replay: {record.attributes['is_replay']}\n"
                + f"  - original_message_id: {record.attributes.get('original_message_id', '-')}\n"
                + f"  - idempotency_key: {show_text(key)} {kept}"
            )
            injecting = True
        out.item(document, text)

    if not ctx.as_json:
        click.echo(f"{'[dry run] ' if dry_run else ''}Cleaning {uri}: removing {shown}")
    try:
        outcome = run_secure_clean(
            ctx.operator(), source, chars, re_inject_queue, reason, dry_run, on_record, allow_key_change
        )
    except KeyChangeRefused as error:
        listed = "\n".join(f"  line {r.line}: {'; '.join(r.key_changes)}" for r in error.records)
        _refuse(
            EXIT_REFUSED,
            f"{error}; nothing was written or sent:\n{listed}\n"
            "Pass --allow-key-change to re-inject them under the cleaned keys (a published row under an "
            "old key stays in curated beside the new one).",
        )
    except NotAllowedError as error:
        _refuse(EXIT_NOT_ALLOWED, str(error))
    except NotFoundError as error:
        _refuse(EXIT_REFUSED, str(error))
    if out is None:
        out = _Stream(ctx.as_json, head, "records")
    summary = outcome.summary.as_dict()
    lines = [
        f"{summary['lines']} line(s): {summary['cleaned']} cleaned, {summary['invalid']} still invalid, "
        f"{summary['unchanged']} unchanged; {summary['characters_removed']} character(s) removed.",
    ]
    if outcome.copy_uri:
        lines.append(f"Cleaned copy: {outcome.copy_uri} (the source is unchanged).")
    if re_inject_queue and not dry_run:
        lines.append(
            f"Injected {outcome.injected} replay(s) into {re_inject_queue}; quarantined "
            f"{outcome.quarantined} original record(s) (the replays bypass the quarantine)."
        )
    lines += [f"WARNING: {warning}" for warning in outcome.warnings]
    if dry_run:
        lines.append("Dry run: nothing was written, sent or quarantined.")
    out.end({"outcome": outcome.as_dict()}, "\n".join(lines))
    sys.exit(EXIT_FAILED if summary["invalid"] or outcome.warnings else EXIT_OK)


@cli.command("replay")
@click.argument("fixed_records", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--reason", default="replay of fixed records", show_default=True, help="Recorded in the audit log."
)
@click.option("--dry-run", is_flag=True, help="Judge the records; send nothing.")
@pass_context
def replay(ctx: Context, fixed_records: str, reason: str, dry_run: bool) -> None:
    """Re-inject hand-fixed copies of quarantined records as replays.

    FIXED_RECORDS holds one fixed record per line (the message body, a JSON object), e.g. the
    original with its amount corrected. Each must replace a quarantined record (its event_id is in
    the quarantine) and pass the forwarder and the standardized audit; it is sent to the ingest queue
    as a data-patcher replay (is_replay=true, idempotency_key, and the grant that makes it one), so
    it bypasses the quarantine and supersedes the original in curated. Records that fail are listed
    with why and not sent (exit 1).
    """
    from pathlib import Path

    from wap_pipeline.operations.patching import NotAllowedError
    from wap_pipeline.operations.replaying import replay_fixed_records
    from wap_pipeline.rules.cleaning import CLEANED, show_text

    queue = ctx.settings.queue_name
    try:
        outcome = replay_fixed_records(
            ctx.operator(), Path(fixed_records).read_bytes().split(b"\n"), reason, dry_run
        )
    except NotAllowedError as error:
        _refuse(EXIT_NOT_ALLOWED, str(error))
    new_ids = {doc["line"]: doc["new_message_id"] for doc in outcome.as_dict()["records"]}
    lines = []
    for record in outcome.records:
        if record.status != CLEANED:
            lines.append(
                f"line {record.line} ({record.ids.describe()}): NOT injected: {'; '.join(record.reasons)}"
            )
        elif dry_run:
            lines.append(
                f"line {record.line} ({record.ids.describe()}): would be injected with attributes {record.attributes}"
            )
        else:
            lines += [
                f"line {record.line} -> message {new_ids[record.line]}",
                f"  - is_replay: {record.attributes['is_replay']}",
                f"  - idempotency_key: {show_text(record.attributes.get('idempotency_key') or '-')}",
            ]
    verb = "would be injected" if dry_run else f"injected into {queue}"
    lines.append(
        f"{len(outcome.sendable)} replay(s) {verb}; {len(outcome.refused)} refused"
        + (" (dry run: nothing was sent)." if dry_run else f" (patch {outcome.patch_id}).")
    )
    ctx.emit({**outcome.as_dict(), "dry_run": dry_run}, "\n".join(lines))
    sys.exit(EXIT_FAILED if outcome.refused else EXIT_OK)


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
@click.option(
    "--why",
    is_flag=True,
    help="Say why the forwarder rejected each message, from its receipts of the DLQ's retention period; "
    "a message it never rejected is a victim of something else (receives spent by crashes), not bad content.",
)
@pass_context
def dlq_list(ctx: Context, limit: int | None, why: bool) -> None:
    """List DLQ messages without consuming them (they stay in the DLQ)."""
    from datetime import UTC, datetime, timedelta

    from wap_pipeline import aws
    from wap_pipeline.ingest.dlq import browse
    from wap_pipeline.ingest.receipts import receipt_log

    messages = browse(*_dlq_url(ctx), limit=limit)
    reasons: dict[str, str] = {}
    if why and messages:
        since = datetime.now(UTC) - timedelta(
            seconds=ctx.settings.dlq_retention_s + ctx.settings.queue_retention_s
        )
        for receipt in receipt_log(aws.client("s3", ctx.settings), ctx.settings).read(since):
            reasons.update((r.message_id, r.reason) for r in receipt.rejected)
    documents = [
        {**m.as_dict(), "rejected_for": reasons.get(m.message_id)} if why else m.as_dict() for m in messages
    ]
    lines = [
        f"{m.message_id}\toriginal={m.original_message_id}\treceives={m.receive_count}\tsent={m.sent_at}\t{m.body[:60]!r}"
        + (
            f"\trejected: {reasons.get(m.message_id) or 'never by the forwarder (not its content)'}"
            if why
            else ""
        )
        for m in messages
    ]
    ctx.emit(documents, "\n".join(lines) if lines else "DLQ is empty")


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


def _dlq_outcome(ctx: Context, outcome, dry_run: bool) -> None:
    """Print a DLQ patch's outcome and exit: 0 when every chosen message was fixed, else 1."""
    from wap_pipeline.rules.dlq_fixes import describe

    new_ids = outcome.as_dict()["messages"]
    lines = [
        describe(fix) + (f" -> replay {doc['new_message_id']}" if doc["new_message_id"] else "")
        for fix, doc in zip(outcome.fixes, new_ids, strict=True)
    ]
    verb = "would be re-injected" if dry_run else "re-injected as replays and deleted from the DLQ"
    lines.append(
        f"{len(outcome.fixed)} message(s) {verb}; {len(outcome.left)} left in the DLQ"
        + (" (dry run: nothing was sent or deleted)." if dry_run else f" (patch {outcome.patch_id}).")
    )
    ctx.emit({**outcome.as_dict(), "dry_run": dry_run}, "\n".join(lines))
    sys.exit(EXIT_FAILED if outcome.left else EXIT_OK)


@dlq.command("patch")
@click.option("--message-id", "message_ids", multiple=True, help="Only these messages (repeatable).")
@click.option("--all", "all_messages", is_flag=True, help="Every message of the DLQ.")
@click.option(
    "--remove-chars",
    required=True,
    help="Characters to remove, as for secure-clean: '\\x1F', '\\uFEFF', '\\t'.",
)
@click.option("--reason", default="dlq patch", show_default=True, help="Recorded in the audit log.")
@click.option("--dry-run", is_flag=True, help="Read, clean and validate; send and delete nothing.")
@pass_context
def dlq_patch(
    ctx: Context,
    message_ids: tuple[str, ...],
    all_messages: bool,
    remove_chars: str,
    reason: str,
    dry_run: bool,
) -> None:
    """Remove characters from DLQ bodies (secure-clean's rules) and re-inject the fixed ones.

    Each new body is validated as the forwarder will see it (a JSON object within the limits) and as
    the standardized audit will; a fixed message is sent to the ingest queue as a replay
    (is_replay=true, original_message_id, idempotency_key from the body) and deleted from the DLQ only
    after the replay was accepted. A message still invalid stays in the DLQ, listed with why (exit 1).
    """
    from wap_pipeline.operations.dlq_patching import NotInDlqError, fix_dlq
    from wap_pipeline.operations.patching import NotAllowedError
    from wap_pipeline.rules.cleaning import parse_chars
    from wap_pipeline.rules.dlq_fixes import patch_message

    if bool(message_ids) == all_messages:
        raise click.UsageError("give --message-id ID (repeatable) or --all")
    try:
        chars = parse_chars(remove_chars)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--remove-chars") from error
    limits = ctx.settings.payload_limits

    def fix(message, fields, now):
        return patch_message(message, chars, fields, now, limits)

    try:
        outcome = fix_dlq(ctx.operator(), "dlq.patch", set(message_ids) or None, fix, reason, dry_run)
    except NotAllowedError as error:
        _refuse(EXIT_NOT_ALLOWED, str(error))
    except NotInDlqError as error:
        _refuse(EXIT_REFUSED, str(error))
    _dlq_outcome(ctx, outcome, dry_run)


@dlq.command("edit")
@click.argument("message_id")
@click.option("--reason", default="dlq edit", show_default=True, help="Recorded in the audit log.")
@click.option("--yes", is_flag=True, help="Re-inject without asking once the edit is valid.")
@pass_context
def dlq_edit(ctx: Context, message_id: str, reason: str, yes: bool) -> None:
    """Edit a DLQ body in $EDITOR (like `kubectl edit`) and re-inject it as a replay.

    On save the body is validated as the forwarder and the standardized audit will see it. An invalid
    edit is refused with the parser's message and position (exit 1; the edit is kept in a file, the
    DLQ message stays). A valid one is shown as a diff and re-injected only on confirmation (or --yes);
    the DLQ message is deleted once its replay was accepted.
    """
    import difflib
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from wap_pipeline.operations.dlq_patching import NotInDlqError, find, fix_dlq
    from wap_pipeline.operations.patching import NotAllowedError, standardized_fields
    from wap_pipeline.rules.cleaning import show_text
    from wap_pipeline.rules.dlq_fixes import FIXED, check_fix

    try:
        message = find(ctx.settings, message_id)
    except NotInDlqError as error:
        _refuse(EXIT_REFUSED, str(error))
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="dlq-edit-", delete=False) as handle:
        handle.write(message.body)
    path = Path(handle.name)
    click.edit(filename=str(path))
    edited = path.read_text()
    if edited.endswith("\n") and not message.body.endswith("\n"):
        edited = edited[:-1]  # the newline editors add at the end of a file
    if edited == message.body:
        path.unlink()
        ctx.emit({"message_id": message.message_id, "changed": False}, "Edit cancelled, no changes made.")
        return
    fields, _ = standardized_fields(ctx.settings)
    limits = ctx.settings.payload_limits
    fix = check_fix(message, edited, "edit", fields, datetime.now(UTC), limits)
    diff = list(
        difflib.unified_diff(
            show_text(message.body).splitlines(),
            show_text(edited).splitlines(),
            f"dlq/{message.message_id}",
            "edited",
            lineterm="",
        )
    )
    document = {**fix.as_dict(), "diff": diff, "edit_file": str(path)}
    if fix.status != FIXED:
        ctx.emit(
            document,
            "\n".join(diff)
            + "\nrefused: the edit is invalid: "
            + "; ".join(fix.reasons)
            + f"\nThe DLQ message stays; your edit is kept in {path}.",
        )
        sys.exit(EXIT_FAILED)
    if not ctx.as_json:
        click.echo("\n".join(diff))
    confirm(yes, f"Re-inject the edited body as a replay and delete {message.message_id} from the DLQ?")

    def same_edit(taken, fields, now):
        return check_fix(taken, edited, "edit", fields, now, limits)

    try:
        outcome = fix_dlq(ctx.operator(), "dlq.edit", {message.message_id}, same_edit, reason, False)
    except NotAllowedError as error:
        _refuse(EXIT_NOT_ALLOWED, str(error))
    except NotInDlqError as error:
        _refuse(EXIT_REFUSED, str(error))
    path.unlink()
    _dlq_outcome(ctx, outcome, False)


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
@click.option(
    "--url",
    envvar="WAP_DAGSTER_URL",
    default="http://127.0.0.1:3000",
    show_default=True,
    help="Dagster webserver to re-execute through; headless when none answers there.",
)
@pass_context
def resume_pipeline(ctx: Context, pipeline: str, reason: str, dry_run: bool, url: str) -> None:
    """Reset the breaker to GREEN (recorded) and re-drive the failed batches from failure.

    With a Dagster webserver reachable at --url (env WAP_DAGSTER_URL), the failed runs are re-executed
    from failure through its GraphQL API (as "Re-execute from failure" in the UI) and their run ids
    printed; otherwise the re-drive runs headless, the same path as `wap-pipeline redrive`. The output
    says which path was used.
    """
    from dagster import DagsterInstance

    from wap_pipeline.runner import batches_to_redrive
    from wap_pipeline.state import ensure_dagster_home
    from wap_pipeline.webserver import DagsterWebserver, WebserverError, rerun_failed

    if pipeline != ctx.settings.pipeline_name:
        click.echo(
            f"refused: unknown pipeline {pipeline!r} (this deployment runs {ctx.settings.pipeline_name!r})",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    operator = ctx.operator()
    webserver = DagsterWebserver(url)
    path = f"webserver {url}" if webserver.reachable() else "headless"
    if dry_run:
        ensure_dagster_home(ctx.settings)
        with DagsterInstance.get() as instance:
            todo = [key for key, _ in batches_to_redrive(instance)]
        state = operator.breaker.state()
        ctx.emit(
            {"breaker": state.status, "would_reset": state.is_red, "would_redrive": todo, "path": path},
            f"dry run: breaker is {state.status}; would reset it and re-drive {len(todo)} batch(es): "
            f"{', '.join(todo) or '-'} ({path})",
        )
        return
    state = operator.reset_breaker(reason)
    if not ctx.as_json:
        click.echo(f"Circuit Breaker Reset (Status={state.status}). Re-driving {pipeline} ({path}).")
    if path == "headless":
        result = drive_until_idle(ctx.settings, redrive_first=True, quiet=ctx.as_json)
        run_ids, failed = result.run_ids, result.failed
    else:
        log = (lambda message: None) if ctx.as_json else click.echo
        try:
            reruns = rerun_failed(webserver, log=log)
        except WebserverError as error:
            click.echo(f"re-drive through {url} failed: {error}", err=True)
            sys.exit(EXIT_FAILED)
        run_ids = [r.run_id for r in reruns]
        failed = [f"{r.partition} run {r.run_id}" for r in reruns if not r.succeeded]
    ctx.emit(
        {"breaker": state.status, "path": path, "run_ids": run_ids, "failed": failed},
        "\n".join(f"run {run_id}" for run_id in run_ids) or "no runs were needed",
    )
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@cli.command("failures")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (as the group's --json).")
@pass_context
def failures(ctx: Context, as_json: bool) -> None:
    """Each failed, unpublished batch: the step, the error, and the records to quarantine.

    Records are named by their quarantine id -- exactly what `data-patcher quarantine add` takes
    (the event_id, or message:<id> for a record without a usable one) -- with the audit's reasons.
    Quarantined records are left out, so a batch that lists none is ready for `resume-pipeline`.
    Exit 0 when nothing failed, 1 otherwise.
    """
    from wap_pipeline.iceberg.catalog import load_wap_catalog
    from wap_pipeline.iceberg.schemas import RAW_TABLE, STANDARDIZED_TABLE
    from wap_pipeline.operations.failures import failed_batches
    from wap_pipeline.operations.patching import standardized_fields

    ctx.as_json = ctx.as_json or as_json
    operator = ctx.operator()
    catalog = load_wap_catalog(ctx.settings)
    standardized, raw = catalog.load_table(STANDARDIZED_TABLE), catalog.load_table(RAW_TABLE)
    fields, _ = standardized_fields(ctx.settings)
    state = operator.breaker.state()
    batches = failed_batches(
        standardized, raw, state, fields, operator.quarantine.ids(), operator.replay_grants.lookup
    )
    lines = []
    for batch in batches:
        lines.append(f"batch {batch.batch_id} failed in {batch.step}: {batch.error}")
        lines += [f"  {r.quarantine_id}\t{'; '.join(r.reasons)}" for r in batch.records]
        if batch.step == "standardized" and not batch.records:
            lines.append("  no record left to quarantine: `data-patcher resume-pipeline` re-drives it")
    ctx.emit({"batches": [b.as_dict() for b in batches]}, "\n".join(lines) or "no failed batch")
    sys.exit(EXIT_FAILED if batches else EXIT_OK)


@cli.group("firehose-errors")
def firehose_errors() -> None:
    """Records Firehose could not deliver (its error output prefix): list them, re-ingest them once."""


@firehose_errors.command("list")
@pass_context
def firehose_errors_list(ctx: Context) -> None:
    """Error files whose records were not re-ingested yet. Exit 1 when there are some."""
    from wap_pipeline import aws
    from wap_pipeline.ingest.firehose_errors import pending

    waiting = pending(aws.client("s3", ctx.settings), ctx.settings)
    ctx.emit(
        {
            "pending": [
                {"key": o.key, "size": o.size, "written": o.last_modified.isoformat()} for o in waiting
            ]
        },
        "\n".join(f"{o.key}\t{o.size} bytes\t{o.last_modified.isoformat()}" for o in waiting)
        or "no Firehose error output waiting",
    )
    sys.exit(EXIT_FAILED if waiting else EXIT_OK)


@firehose_errors.command("reingest")
@click.option(
    "--reason", default="Firehose error output", show_default=True, help="Recorded in the audit log."
)
@click.option("--dry-run", is_flag=True, help="List what would be re-ingested; change nothing.")
@pass_context
def firehose_errors_reingest(ctx: Context, reason: str, dry_run: bool) -> None:
    """Land the records of every waiting error file as a landing file, exactly once (a write-once key
    per error file): the landing sensor batches them like any landed file."""
    from wap_pipeline import aws
    from wap_pipeline.ingest.firehose_errors import pending, reingest

    s3 = aws.client("s3", ctx.settings)
    waiting = pending(s3, ctx.settings)
    landed: dict[str, str | None] = {}
    if waiting and not dry_run:
        scope = {"error_files": [o.key for o in waiting]}
        with ctx.operator().acting(
            "firehose-errors.reingest", ctx.settings.landing_bucket, reason, scope
        ) as done:
            for error_file in waiting:
                landed[error_file.key] = reingest(s3, ctx.settings, error_file.key)
            done["landed"] = landed
    if dry_run:
        lines = [f"would re-ingest {o.key}" for o in waiting]
    else:
        lines = [f"{key} -> {target or 're-ingested before, skipped'}" for key, target in landed.items()]
    ctx.emit(
        {"dry_run": dry_run, "pending": [o.key for o in waiting], "landed": landed},
        "\n".join(lines) or "no Firehose error output waiting",
    )


@cli.command("audit-log")
@click.option(
    "--every-phase", is_flag=True, help="Each action's intent and outcome entries, not one per action."
)
@pass_context
def audit_log(ctx: Context, every_phase: bool) -> None:
    """Every recorded operator action, oldest first: its outcome (done / failed), or -- phase
    `intent` -- an action that started and has no recorded outcome."""
    entries = ctx.operator().audit.entries(every_phase)
    lines = [f"{e.at}\t{e.operator}\t{e.action}\t{e.phase}\t{e.target}\t{e.reason}" for e in entries]
    ctx.emit([e.as_dict() for e in entries], "\n".join(lines) if lines else "no operator actions recorded")


if __name__ == "__main__":
    cli()
