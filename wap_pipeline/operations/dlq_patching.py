"""The I/O around :mod:`wap_pipeline.rules.dlq_fixes` for ``data-patcher dlq patch | edit`` and the
auto-fix Lambda: take DLQ messages, judge the new bodies, re-inject the fixed ones, leave the rest.

A message being fixed is *taken* (received, hidden for a while) so that nobody else acts on it
meanwhile; whatever is not fixed is released (visible again) before anything is sent. A fixed
message is deleted only after its replay was accepted (:meth:`~wap_pipeline.operations.actions.Operator.dlq_replace`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wap_pipeline import aws
from wap_pipeline.ingest import dlq
from wap_pipeline.operations.patching import check_queue, new_patch_id, standardized_fields
from wap_pipeline.provision import queue_url
from wap_pipeline.rules.dlq_fixes import FIXED, DlqFix
from wap_pipeline.state import record_sent


class NotInDlqError(Exception):
    """A message id that is not (or no longer) in the DLQ."""


@dataclass
class DlqPatchOutcome:
    patch_id: str
    fixes: list[DlqFix] = field(default_factory=list)
    new_message_ids: list[str] = field(default_factory=list)

    @property
    def fixed(self) -> list[DlqFix]:
        return [f for f in self.fixes if f.status == FIXED]

    @property
    def left(self) -> list[DlqFix]:
        return [f for f in self.fixes if f.status != FIXED]

    def as_dict(self) -> dict:
        new_ids = dict(zip((f.message.message_id for f in self.fixed), self.new_message_ids, strict=False))
        return {
            "patch_id": self.patch_id,
            "fixed": len(self.fixed),
            "left_in_dlq": len(self.left),
            "messages": [
                {**f.as_dict(), "new_message_id": new_ids.get(f.message.message_id)} for f in self.fixes
            ],
        }


def fix_dlq(
    operator,
    action: str,
    message_ids: set[str] | None,
    fix: Callable[[dlq.DlqMessage, dict[str, object], datetime], DlqFix],
    reason: str,
    dry_run: bool,
) -> DlqPatchOutcome:
    """Apply ``fix(message, fields, now)`` to the chosen DLQ messages (all when ``message_ids`` is None),
    re-inject the fixed ones and delete them from the DLQ; the rest stay. Dry run: browse only.

    Raises NotInDlqError before changing anything when a chosen id is not in the DLQ."""
    settings = operator.settings
    check_queue(settings, settings.queue_name)
    sqs = aws.client("sqs", settings)
    url = queue_url(sqs, settings.dlq_name)
    if dry_run:
        messages = [m for m in dlq.browse(sqs, url) if message_ids is None or m.message_id in message_ids]
    else:
        messages = dlq.take(sqs, url, message_ids)
    missing = (message_ids or set()) - {m.message_id for m in messages}
    if missing:
        if not dry_run:
            dlq.release(sqs, url, messages)
        raise NotInDlqError(f"not in {settings.dlq_name}: {', '.join(sorted(missing))}")
    fields, _ = standardized_fields(settings)
    now = datetime.now(UTC)
    outcome = DlqPatchOutcome(new_patch_id(now), [fix(m, fields, now) for m in messages])
    if dry_run:
        return outcome
    dlq.release(sqs, url, [f.message for f in outcome.left])
    if outcome.fixes:
        outcome.new_message_ids = operator.dlq_replace(
            action, outcome.fixed, outcome.left, reason, outcome.patch_id
        )
    record_sent(settings, len(outcome.new_message_ids), kind="replay")
    return outcome


def find(settings, message_id: str) -> dlq.DlqMessage:
    """One DLQ message, by message id or original message id, without consuming it."""
    sqs = aws.client("sqs", settings)
    for message in dlq.browse(sqs, queue_url(sqs, settings.dlq_name)):
        if message_id in (message.message_id, message.original_message_id):
            return message
    raise NotInDlqError(f"no message {message_id} in {settings.dlq_name}")
