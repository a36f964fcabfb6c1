"""Critical-data-element (CDE) rules, as vectorised functions over Arrow tables.

Each rule returns a boolean mask of violating rows. :func:`tag_invalid` folds every violation (and
the problems found while parsing) into ``invalid_reasons`` and sets ``invalid_flag``; rows are
tagged, never dropped. :func:`count_invalid` is the audit itself. Every engine calls these.

A verdict depends on the batch alone, never on the clock: rules that need a time compare with the
batch's *reference time* -- when its newest landing file landed, recorded once in its manifest (see
:meth:`wap_pipeline.ingest.landing.Manifest.landed_at`). Re-auditing a batch next week, on a re-drive
or under another clock gives the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from wap_pipeline.rules.quarantine import quarantine_ids
from wap_pipeline.rules.standardize import PARSE_REASONS_COLUMN

# Each column's declared domain: a value outside it is a violation with a reason, never an exception
# further down (curated's dedup window, daily totals).
MAX_KEY_LENGTH = 128
"""Longest ``idempotency_key``, ``event_id``, ``account_id`` and ``event_type``."""
MAX_ABS_AMOUNT_MINOR = 10**15
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)
"""Event times are within [EARLIEST_EVENT_TIME, LATEST_EVENT_TIME) and not after the batch landed."""
# Timestamps further ahead of the batch's landing than this are a producer clock or encoding bug.
MAX_FUTURE_SKEW = timedelta(days=1)
_CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    violations: Callable[[pa.Table, datetime], pa.ChunkedArray | pa.Array]
    """(rows, the batch's reference time) -> mask of violating rows."""


def _blank(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_trim_whitespace(column), ""))


def _has_control_characters(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(pc.match_substring_regex(column, _CONTROL_CHARACTERS), False)


def _too_long_rule(column: str) -> Rule:
    return Rule(
        f"{column}_too_long",
        f"{column} longer than {MAX_KEY_LENGTH} characters",
        lambda t, reference: pc.fill_null(pc.greater(pc.utf8_length(t[column]), MAX_KEY_LENGTH), False),
    )


def _outside_event_times(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = pa.timestamp("us", tz="UTC")
    before = pc.less(column, pa.scalar(EARLIEST_EVENT_TIME, type=kind))
    after = pc.greater_equal(column, pa.scalar(LATEST_EVENT_TIME, type=kind))
    return pc.fill_null(pc.or_(before, after), False)


def _currency_invalid(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.invert(pc.fill_null(pc.match_substring_regex(column, r"^[A-Z]{3}$"), False))


RULES: tuple[Rule, ...] = (
    Rule("event_id_missing", "event_id is null or blank", lambda t, reference: _blank(t["event_id"])),
    _too_long_rule("event_id"),
    Rule(
        "idempotency_key_missing",
        "idempotency_key is null or blank",
        lambda t, reference: _blank(t["idempotency_key"]),
    ),
    Rule(
        "idempotency_key_unprintable",
        "idempotency_key contains control characters",
        lambda t, reference: _has_control_characters(t["idempotency_key"]),
    ),
    _too_long_rule("idempotency_key"),
    Rule("event_type_missing", "event_type is null or blank", lambda t, reference: _blank(t["event_type"])),
    _too_long_rule("event_type"),
    Rule(
        "event_timestamp_missing",
        "event_timestamp is missing or unparseable",
        lambda t, reference: pc.is_null(t["event_timestamp"]),
    ),
    Rule(
        "event_timestamp_in_future",
        f"event_timestamp more than {MAX_FUTURE_SKEW} after the batch landed",
        lambda t, reference: pc.fill_null(
            pc.greater(
                t["event_timestamp"],
                pa.scalar(reference + MAX_FUTURE_SKEW, type=pa.timestamp("us", tz="UTC")),
            ),
            False,
        ),
    ),
    Rule(
        "event_timestamp_out_of_range",
        f"event_timestamp before {EARLIEST_EVENT_TIME:%Y-%m-%d} or from {LATEST_EVENT_TIME:%Y-%m-%d} on",
        lambda t, reference: _outside_event_times(t["event_timestamp"]),
    ),
    Rule("account_id_missing", "account_id is null or blank", lambda t, reference: _blank(t["account_id"])),
    _too_long_rule("account_id"),
    Rule("amount_missing", "amount_minor is null", lambda t, reference: pc.is_null(t["amount_minor"])),
    Rule(
        "amount_out_of_range",
        f"|amount_minor| >= {MAX_ABS_AMOUNT_MINOR}",
        # Not abs(): it wraps for the smallest int64, which would pass.
        lambda t, reference: pc.fill_null(
            pc.or_(
                pc.greater_equal(t["amount_minor"], MAX_ABS_AMOUNT_MINOR),
                pc.less_equal(t["amount_minor"], -MAX_ABS_AMOUNT_MINOR),
            ),
            False,
        ),
    ),
    Rule(
        "currency_invalid",
        "currency is not an ISO-4217 code (3 upper-case letters)",
        lambda t, reference: _currency_invalid(t["currency"]),
    ),
)


def tag_invalid(table: pa.Table, reference: datetime) -> pa.Table:
    """Add ``invalid_reasons`` (list of rule names / parse problems) and ``invalid_flag``.

    ``reference`` is the batch's reference time (when it landed), not the time of the audit."""
    masks = []
    for rule in RULES:
        mask = rule.violations(table, reference)
        if isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks() if mask.num_chunks else pa.array([], type=pa.bool_())
        masks.append(mask)
    parse_reasons = table[PARSE_REASONS_COLUMN] if PARSE_REASONS_COLUMN in table.column_names else None
    if PARSE_REASONS_COLUMN in table.column_names:
        table = table.drop_columns([PARSE_REASONS_COLUMN])
    reason_type = pa.list_(pa.string())
    no_parse_problems = parse_reasons is None or not pc.max(pc.list_value_length(parse_reasons)).as_py()
    if no_parse_problems and not any(pc.any(mask).as_py() for mask in masks):
        # Every row valid (the usual batch): no per-row work.
        empty = pa.ListArray.from_arrays(
            pa.array([0] * (table.num_rows + 1), pa.int32()), pa.array([], pa.string())
        )
        return table.append_column("invalid_flag", pa.repeat(pa.scalar(False), table.num_rows)).append_column(
            "invalid_reasons", empty.cast(reason_type)
        )
    reasons: list[list[str]] = (
        parse_reasons.to_pylist() if parse_reasons is not None else [[] for _ in range(table.num_rows)]
    )
    for rule, mask in zip(RULES, masks, strict=True):
        for index in pc.indices_nonzero(mask).to_pylist():
            reasons[index].append(rule.name)
    flags = pa.array([bool(r) for r in reasons], type=pa.bool_())
    return table.append_column("invalid_flag", flags).append_column(
        "invalid_reasons", pa.array(reasons, type=reason_type)
    )


@dataclass(frozen=True)
class AuditResult:
    rows: int
    invalid_rows: int
    reasons: dict[str, int]
    sample_invalid_ids: list[str]

    @property
    def passed(self) -> bool:
        return self.invalid_rows == 0


AUDIT_COLUMNS = ("event_id", "original_message_id", "invalid_flag", "invalid_reasons")
"""The columns :func:`count_invalid` reads of a batch's tagged rows."""


def reason_counts(invalid_rows: pa.Table) -> dict[str, int]:
    """How often each rule (or parse problem, without its detail) is named by ``invalid_rows``.

    Counts of disjoint sets of rows add up: an engine may count a batch a piece at a time."""
    reasons: dict[str, int] = {}
    for row_reasons in invalid_rows["invalid_reasons"].to_pylist():
        for reason in row_reasons or []:
            key = reason.split(":", 1)[0]
            reasons[key] = reasons.get(key, 0) + 1
    return reasons


def sample_ids(invalid_rows: pa.Table, sample_size: int = 10) -> list[str]:
    """The first ``sample_size`` quarantine ids of ``invalid_rows`` (what `data-patcher quarantine add`
    takes), sorted, so that the sample does not depend on the order an engine happens to scan files
    in. The sample of a batch is the first ``sample_size`` of the samples of its pieces."""
    ids = quarantine_ids(invalid_rows["event_id"], invalid_rows["original_message_id"])
    return sorted(ids.to_pylist())[:sample_size]


def count_invalid(batch_rows: pa.Table, sample_size: int = 10) -> AuditResult:
    """The audit: count invalid rows of the batch (and why), with a sample of offending ids."""
    invalid = batch_rows.filter(pc.field("invalid_flag"))
    return AuditResult(
        rows=batch_rows.num_rows,
        invalid_rows=invalid.num_rows,
        reasons=reason_counts(invalid),
        sample_invalid_ids=sample_ids(invalid, sample_size),
    )
