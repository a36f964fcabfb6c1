"""Operator actions; each one records its intent in the audit log, does its work, records the outcome."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

from wap_pipeline import aws
from wap_pipeline.ingest import dlq
from wap_pipeline.ingest.producer import send_bodies
from wap_pipeline.operations.audit_log import DONE, FAILED, INTENT, AuditEntry, AuditLog
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.breaker import BreakerState, CircuitBreaker
from wap_pipeline.resources.quarantine import Quarantine, QuarantineEntry
from wap_pipeline.resources.replay_grants import ReplayGrants
from wap_pipeline.rules.cleaning import CleanedLine
from wap_pipeline.rules.dlq_fixes import DlqFix
from wap_pipeline.rules.envelope import REPLAY_TOKEN
from wap_pipeline.rules.replays import ReplayGrant, body_sha256, new_token, replay_quarantine_id
from wap_pipeline.settings import Settings


class Operator:
    """Actions an operator takes, recorded under ``name``."""

    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name
        dynamodb = aws.client("dynamodb", settings)
        self.audit = AuditLog(dynamodb, settings.audit_table)
        self.quarantine = Quarantine(dynamodb, settings.quarantine_table)
        self.replay_grants = ReplayGrants(dynamodb, settings.replay_grants_table)
        self.breaker = CircuitBreaker(dynamodb, settings.breaker_table, settings.pipeline_name)

    @contextlib.contextmanager
    def acting(self, action: str, target: str, reason: str, details: dict | None = None) -> Iterator[dict]:
        """Record the intent, run the body, record the outcome: ``done`` with what the body put in
        the yielded dict, or ``failed`` with the error (then re-raised). A CLI's ``sys.exit(0)`` is
        done; any other exit code is failed."""
        details = details or {}
        intent = self.audit.record(self.name, action, target, reason, details, phase=INTENT)
        outcome: dict = {}
        try:
            yield outcome
        except BaseException as error:
            if isinstance(error, SystemExit) and error.code in (0, None):
                self._conclude(intent, DONE, {**details, **outcome})
            else:
                failure = f"exit {error.code}" if isinstance(error, SystemExit) else repr(error)[:500]
                self._conclude(intent, FAILED, {**details, **outcome, "error": failure})
            raise
        self._conclude(intent, DONE, {**details, **outcome})

    def _conclude(self, intent: AuditEntry, phase: str, details: dict) -> None:
        self.audit.record(
            self.name,
            intent.action,
            intent.target,
            intent.reason,
            details,
            phase=phase,
            intent_id=intent.entry_id,
        )

    def quarantine_add(self, record_id: str, reason: str) -> QuarantineEntry:
        with self.acting("quarantine.add", record_id, reason):
            return self.quarantine.add(record_id, reason, self.name)

    def quarantine_remove(self, record_id: str, reason: str) -> bool:
        with self.acting("quarantine.remove", record_id, reason) as outcome:
            outcome["was_present"] = removed = self.quarantine.remove(record_id)
        return removed

    def dlq_purge(self, reason: str, message_ids: set[str] | None = None) -> list[dlq.DlqMessage]:
        sqs = aws.client("sqs", self.settings)
        scope = {"requested": sorted(message_ids) if message_ids is not None else "all"}
        with self.acting("dlq.purge", self.settings.dlq_name, reason, scope) as outcome:
            purged = dlq.purge(sqs, queue_url(sqs, self.settings.dlq_name), message_ids)
            outcome["message_ids"] = [m.message_id for m in purged]
            outcome["original_message_ids"] = [m.original_message_id for m in purged]
        return purged

    def dlq_redrive(
        self, reason: str, message_ids: set[str] | None = None
    ) -> list[tuple[dlq.DlqMessage, str]]:
        sqs = aws.client("sqs", self.settings)
        scope = {"requested": sorted(message_ids) if message_ids is not None else "all"}
        with self.acting("dlq.redrive", self.settings.queue_name, reason, scope) as outcome:
            moved = dlq.redrive(
                sqs,
                queue_url(sqs, self.settings.dlq_name),
                queue_url(sqs, self.settings.queue_name),
                message_ids,
            )
            outcome["moved"] = [
                {"original_message_id": m.original_message_id, "new_message_id": new} for m, new in moved
            ]
        return moved

    def reset_breaker(self, reason: str) -> BreakerState:
        """Every breaker reset goes through here (`wap-pipeline breaker reset`, `resume-pipeline`)."""
        before = self.breaker.state()
        was = {"was": before.status, "tripped_by": before.tripped_by, "tripped_reason": before.reason[:500]}
        with self.acting("breaker.reset", self.settings.pipeline_name, reason, was):
            return self.breaker.reset(reason, self.name)

    def record_patch(self, copy_uri: str, reason: str, details: dict) -> AuditEntry:
        """A cleaned copy of a landing file was stored (the source is never modified)."""
        return self.audit.record(self.name, "patch.write", copy_uri, reason, details)

    def inject_replays(
        self, queue_name: str, replays: list[CleanedLine], reason: str, patch_id: str
    ) -> list[str]:
        """Send cleaned records to ``queue_name`` as replays (``is_replay``, ``original_message_id``,
        ``idempotency_key`` and ``replay_token`` attributes); returns the new message ids. Each
        replay's grant is written before it is sent (only a granted replay bypasses the quarantine,
        :mod:`wap_pipeline.rules.replays`). What was sent is recorded even when a later send fails."""
        sqs = aws.client("sqs", self.settings)
        url = queue_url(sqs, queue_name)
        new_ids: list[str] = []
        planned = {"patch_id": patch_id, "lines": [r.line for r in replays]}
        with self.acting("patch.inject", queue_name, reason, planned) as outcome:
            grants = self._grants(replays, patch_id)
            outcome["sent"] = sent = []  # filled as messages go out: a failure still records them
            for start in range(0, len(replays), 10):
                group, group_grants = replays[start : start + 10], grants[start : start + 10]
                self.replay_grants.grant(group_grants)
                attributes = [
                    {**r.attributes, REPLAY_TOKEN: g.token} for r, g in zip(group, group_grants, strict=True)
                ]
                new_ids += send_bodies(sqs, url, [r.body or "" for r in group], attributes)
                sent.extend(
                    {
                        "line": r.line,
                        "original_message_id": r.ids.original_message_id,
                        "new_message_id": new_id,
                        "idempotency_key": r.attributes.get("idempotency_key"),
                        "quarantine_id": r.original_quarantine_id,
                        "replay_quarantine_id": g.quarantine_id,
                        REPLAY_TOKEN: g.token,
                    }
                    for r, g, new_id in zip(group, group_grants, new_ids[start:], strict=False)
                )
            outcome["not_sent"] = len(replays) - len(new_ids)
        return new_ids

    def _grants(self, replays: list[CleanedLine], patch_id: str) -> list[ReplayGrant]:
        """A new grant per replay, for the quarantine id and body the pipeline will see. Refuses the
        lot, before anything is sent, when a replay's quarantine id cannot be known in advance."""
        granted_at = datetime.now(UTC).isoformat(timespec="seconds")
        grants, unknown = [], []
        for replay in replays:
            body = replay.body or ""
            quarantine_id = replay_quarantine_id(body, replay.attributes)
            if quarantine_id is None:
                unknown.append(replay.line)
                continue
            grants.append(
                ReplayGrant(new_token(), quarantine_id, body_sha256(body), self.name, granted_at, patch_id)
            )
        if unknown:
            raise ValueError(
                f"line(s) {unknown}: no usable event_id and no original_message_id, so the replay's "
                "quarantine id is not known before it is sent and it cannot be granted"
            )
        return grants

    def dlq_replace(
        self,
        action: str,
        fixes: list[DlqFix],
        left: list[DlqFix],
        reason: str,
        patch_id: str,
        delete_from_dlq: bool = True,
    ) -> list[str]:
        """Re-inject fixed DLQ bodies as replays (through :meth:`inject_replays`, ten at a time) and
        delete each DLQ message only after its replay was accepted; ``left`` stay in the DLQ. One
        ``action`` entry says which message became which replay and what was left, and why.

        ``delete_from_dlq=False``: the caller deletes (a Lambda SQS event source mapping deletes the
        messages the function does not report as failed)."""
        sqs = aws.client("sqs", self.settings)
        url = queue_url(sqs, self.settings.dlq_name)
        planned = {
            "patch_id": patch_id,
            "to_replace": [f.message.message_id for f in fixes],
            "left": [{"message_id": f.message.message_id, "how": f.how, "reasons": f.reasons} for f in left],
        }
        with self.acting(action, self.settings.dlq_name, reason, planned) as outcome:
            outcome["replaced"] = replaced = []  # filled as replays go out: a failure still records them
            for start in range(0, len(fixes), 10):
                group = fixes[start : start + 10]
                replays = [fix.as_replay(start + i + 1) for i, fix in enumerate(group)]
                new_ids = self.inject_replays(self.settings.queue_name, replays, reason, patch_id)
                kept = dlq.delete(sqs, url, [f.message for f in group]) if delete_from_dlq else set()
                replaced += [
                    {
                        "message_id": fix.message.message_id,
                        "original_message_id": fix.message.original_message_id,
                        "new_message_id": new_id,
                        "idempotency_key": fix.idempotency_key,
                        "how": fix.how,
                        "deleted_from_dlq": delete_from_dlq and fix.message.message_id not in kept,
                    }
                    for fix, new_id in zip(group, new_ids, strict=True)
                ]
        return [r["new_message_id"] for r in replaced]
