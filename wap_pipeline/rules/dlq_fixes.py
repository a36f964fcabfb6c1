"""Fix dead-letter messages -- plain functions, no AWS.

A DLQ message is a body the forwarder refused ``maxReceiveCount`` times. It never reached a landing
file, so there is no original to quarantine: a fixed body is simply sent again as a replay
(``is_replay``, ``original_message_id``, ``idempotency_key``), and curated keeps one row per key.

Three ways to a new body, one way to judge it (:func:`check_fix`):

* :func:`patch_message` -- ``data-patcher dlq patch``: the characters ``secure-clean`` would remove,
  removed by the same code (:func:`wap_pipeline.rules.cleaning.clean_line`);
* an operator's edit -- ``data-patcher dlq edit``;
* :func:`autofix_message` -- the auto-fix Lambda: only the allow-listed fixes of :data:`AUTOFIXES`
  that its configuration names.

:func:`check_fix` builds the replay as the forwarder will receive it and runs the forwarder's own
function (:func:`~wap_pipeline.rules.envelope.to_landing_record`: a JSON object within the limits)
and the standardized audit's own rules over the landing line it would write
(:func:`~wap_pipeline.rules.cleaning.audit_lines`). Only a body that passes both is ``fixed``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from wap_pipeline.ingest.dlq import DlqMessage
from wap_pipeline.ingest.forwarder import FIREHOSE_MAX_RECORD_BYTES
from wap_pipeline.rules.cleaning import (
    CLEANED,
    UNCHANGED,
    CleanedLine,
    Line,
    RecordIds,
    audit_lines,
    clean_line,
    describe_reason,
    show_text,
    sqs_unsafe,
)
from wap_pipeline.rules.envelope import (
    DEFAULT_LIMITS,
    PayloadLimits,
    Rejection,
    json_object,
    landing_line,
    parse_body,
    to_landing_record,
)

FIXED = "fixed"
"""Valid for the forwarder and the audit: to re-inject, then delete from the DLQ."""
INVALID = "invalid"
"""Changed, but still refused: stays in the DLQ."""
UNCHANGED_BODY = "unchanged"
"""Nothing to change with this rule: stays in the DLQ."""


@dataclass(frozen=True)
class DlqFix:
    message: DlqMessage
    status: str
    how: str
    """``remove-chars``, ``edit`` or ``autofix:<fix>,...``."""
    body: str | None = None
    """The new body (``fixed`` and ``invalid``)."""
    attributes: dict[str, str] = field(default_factory=dict)
    """The replay's SQS message attributes."""
    reasons: list[str] = field(default_factory=list)
    """Why the message stays in the DLQ."""

    @property
    def idempotency_key(self) -> str | None:
        return self.attributes.get("idempotency_key")

    @property
    def event_id(self) -> str | None:
        value = (json_object(self.body) or {}).get("event_id")
        return value if isinstance(value, str) else None

    def as_replay(self, number: int) -> CleanedLine:
        """The replay as :meth:`wap_pipeline.operations.actions.Operator.inject_replays` sends it
        (the one way replays are sent); ``number`` stands for secure-clean's line number."""
        ids = RecordIds(
            message_id=self.message.message_id,
            original_message_id=self.message.original_message_id,
            idempotency_key=self.idempotency_key,
            event_id=self.event_id,
        )
        return CleanedLine(
            number,
            CLEANED,
            ids,
            body=self.body,
            attributes=self.attributes,
            original_quarantine_id=self.event_id,
        )

    def as_dict(self) -> dict:
        return {
            "message_id": self.message.message_id,
            "original_message_id": self.message.original_message_id,
            "status": self.status,
            "how": self.how,
            "attributes": self.attributes,
            "reasons": self.reasons,
            "body": self.body,
        }


def replay_attributes(message: DlqMessage, body: str) -> dict[str, str]:
    """What the replay of ``message`` carries: ``is_replay``, its ``original_message_id``, and the
    ``idempotency_key`` the message already had as an attribute, else the one its body holds."""
    attributes = {"is_replay": "true", "original_message_id": message.original_message_id}
    key = message.attributes.get("idempotency_key")
    body_key = (json_object(body) or {}).get("idempotency_key")
    if key is None and isinstance(body_key, str):
        key = body_key
    if key:
        attributes["idempotency_key"] = key
    return attributes


def replay_problems(
    body: str,
    attributes: dict[str, str],
    fields: dict[str, object],
    now: datetime,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> list[str]:
    """Why the pipeline would refuse this replay: SQS, the forwarder, or the standardized audit
    (empty: it will reach curated)."""
    for value in (body, *attributes.values()):
        unsafe = sqs_unsafe(value)
        if unsafe:
            return [unsafe]
    message = {
        "MessageId": "replay",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(now.timestamp() * 1000))},
        "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    }
    record = to_landing_record(message, limits)
    if isinstance(record, Rejection):
        return [f"the forwarder would reject it: {record.reason}"]
    line = landing_line(record)
    if len(line) > FIREHOSE_MAX_RECORD_BYTES:
        return [f"record of {len(line)} bytes exceeds Firehose's {FIREHOSE_MAX_RECORD_BYTES} byte limit"]
    reasons = audit_lines([(1, line.rstrip(b"\n"))], fields, now).get(1, [])
    return [f"the standardized audit would flag it: {describe_reason(r)}" for r in reasons]


def check_fix(
    message: DlqMessage,
    body: str,
    how: str,
    fields: dict[str, object],
    now: datetime,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> DlqFix:
    """Judge a new body for ``message`` exactly as the pipeline will judge its replay."""
    if body == message.body:
        return DlqFix(message, UNCHANGED_BODY, how, reasons=[f"unchanged; {still_wrong(message, limits)}"])
    attributes = replay_attributes(message, body)
    problems = replay_problems(body, attributes, fields, now, limits)
    return DlqFix(message, INVALID if problems else FIXED, how, body, attributes, problems)


def still_wrong(message: DlqMessage, limits: PayloadLimits = DEFAULT_LIMITS) -> str:
    """Why the forwarder refuses the message's body as it is."""
    reason = parse_body(message.body, limits)
    return f"the forwarder rejects it: {reason}" if isinstance(reason, str) else "its body is a JSON object"


# --- data-patcher dlq patch --remove-chars ----------------------------------------------------------


def patch_message(
    message: DlqMessage,
    chars: Collection[str],
    fields: dict[str, object],
    now: datetime,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> DlqFix:
    """Remove ``chars`` from a DLQ body as ``secure-clean`` removes them from a landing line (raw
    text only when it does not parse, then from every string), then :func:`check_fix`."""
    data = message.body.encode("utf-8", errors="surrogatepass")
    cleaned = clean_line(Line(1, 0, data, len(data)), chars, limits)
    if cleaned.status == UNCHANGED:
        reason = f"none of the characters to remove was found; {still_wrong(message, limits)}"
        return DlqFix(message, UNCHANGED_BODY, "remove-chars", reasons=[reason])
    if cleaned.status != CLEANED or cleaned.body is None:
        body = cleaned.output.decode("utf-8", errors="replace") if cleaned.output else None
        return DlqFix(message, INVALID, "remove-chars", body, reasons=cleaned.reasons)
    changes = id_changes(message.body, cleaned.body, chars)
    if changes:
        reason = (
            f"cleaning changes its {'; '.join(changes)}: the replay would be another event to curated "
            "(as secure-clean refuses); if that is really meant, edit it by hand (dlq edit)"
        )
        return DlqFix(message, INVALID, "remove-chars", cleaned.body, reasons=[reason])
    return check_fix(message, cleaned.body, "remove-chars", fields, now, limits)


_MARK = "\ue000"  # a private-use character: valid inside a JSON string, where a removed one stood


def id_changes(body: str, cleaned: str, chars: Collection[str]) -> list[str]:
    """``idempotency_key`` / ``event_id`` that removing ``chars`` changes, as far as the original shows
    them. A DLQ body mostly does not parse, so its ids are read with each removable character replaced
    by a mark: a mark inside an id means the cleaning changes it. (A body that does not parse even so --
    a removable character outside every string, say -- shows no ids, and no change is found.)"""
    original = json_object(body) or json_object("".join(_MARK if c in chars else c for c in body)) or {}
    after = json_object(cleaned) or {}
    return [
        f"{name} ('{show_text(original.get(name).replace(_MARK, ''))}' loses characters)"
        if _MARK in original.get(name)
        else f"{name} ('{show_text(original.get(name))}' -> '{show_text(after.get(name))}')"
        for name in ("idempotency_key", "event_id")
        if isinstance(original.get(name), str) and original.get(name) != after.get(name)
    ]


# --- the auto-fix policy -------------------------------------------------------------------------------


def strip_bom(body: str) -> str:
    """A byte-order mark before the JSON text (some producers write one)."""
    return body.lstrip("\ufeff")


def remove_controls_outside_strings(body: str) -> str:
    """Control characters between JSON tokens, where no JSON parser accepts them: C0 (but tab, newline
    and carriage return, which are JSON whitespace), DEL and C1. SQS itself refuses most C0 characters in
    a body, so in a DLQ these are mostly DEL and C1 (e.g. a NEL, U+0085, from a Latin-1 round trip).
    Characters inside strings are never touched: what a value means is not for a machine to decide."""
    out = []
    in_string = escaped = False
    for char in body:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            continue
        out.append(char)
    return "".join(out)


AUTOFIXES: dict[str, Callable[[str], str]] = {
    "strip_bom": strip_bom,
    "remove_controls_outside_strings": remove_controls_outside_strings,
}
"""The only fixes the auto-fix handler may apply: each one changes framing, never a value."""


def parse_policy(spec: str) -> tuple[str, ...]:
    """The configured policy (``strip_bom,remove_controls_outside_strings``), checked against the allow-list."""
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [name for name in names if name not in AUTOFIXES]
    if unknown:
        raise ValueError(f"unknown auto-fix(es) {unknown}; allowed: {sorted(AUTOFIXES)}")
    if not names:
        raise ValueError("the auto-fix policy names no fix")
    return names


def autofix_message(
    message: DlqMessage,
    policy: tuple[str, ...],
    fields: dict[str, object],
    now: datetime,
    limits: PayloadLimits = DEFAULT_LIMITS,
) -> DlqFix:
    """Apply the policy's fixes in order, then :func:`check_fix`; ``how`` names the fixes that changed
    something."""
    body, applied = message.body, []
    for name in policy:
        fixed = AUTOFIXES[name](body)
        if fixed != body:
            applied.append(name)
            body = fixed
    if not applied:
        reason = f"no fix of the policy ({', '.join(policy)}) applies; {still_wrong(message, limits)}"
        return DlqFix(message, UNCHANGED_BODY, "autofix", reasons=[reason])
    return check_fix(message, body, "autofix:" + ",".join(applied), fields, now, limits)


def describe(fix: DlqFix) -> str:
    """One line for an operator."""
    head = f"{fix.message.message_id} (original {fix.message.original_message_id})"
    if fix.status == FIXED:
        return f"{head}: fixed by {fix.how}; key {show_text(fix.idempotency_key) or '-'}"
    return f"{head}: stays in the DLQ: " + "; ".join(fix.reasons)
