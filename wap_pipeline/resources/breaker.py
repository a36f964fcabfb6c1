"""The circuit breaker: one DynamoDB item per pipeline, updated with conditional writes.

GREEN lets batches through. The first failure of standardized or curated trips it RED and records
who, why, which batch and which run; while RED every materialization fails fast. Reset is explicit
and recorded (operator + reason). ``version`` increases on every change; each write is conditional
on the version read, so two writers never overwrite each other's transition.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from dagster import ConfigurableResource, Failure, MetadataValue
from pydantic import PrivateAttr

from wap_pipeline import aws
from wap_pipeline.resources.settings import SettingsResource

GREEN = "GREEN"
RED = "RED"


class BreakerConflictError(RuntimeError):
    """Another writer changed the breaker between our read and our write."""


@dataclass(frozen=True)
class BreakerState:
    pipeline: str
    status: str = GREEN
    reason: str = ""
    batch_id: str = ""
    run_id: str = ""
    tripped_at: str = ""
    tripped_by: str = ""
    reset_at: str = ""
    reset_by: str = ""
    reset_reason: str = ""
    version: int = 0

    @property
    def is_red(self) -> bool:
        return self.status == RED


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def operator_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return "unknown"


class CircuitBreaker:
    def __init__(self, dynamodb, table: str, pipeline: str):
        self._dynamodb = dynamodb
        self._table = table
        self.pipeline = pipeline

    def state(self) -> BreakerState:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=aws.to_item({"pipeline": self.pipeline}), ConsistentRead=True
        ).get("Item")
        if not item:
            return BreakerState(self.pipeline)
        values = aws.from_item(item)
        return BreakerState(**{k: v for k, v in values.items() if k in BreakerState.__dataclass_fields__})

    def _write(self, previous: BreakerState, new: BreakerState) -> None:
        if not aws.put_if_version(self._dynamodb, self._table, asdict(new), "pipeline", previous.version):
            raise BreakerConflictError(f"breaker {self.pipeline} changed concurrently")

    def trip(self, reason: str, batch_id: str = "", run_id: str = "", tripped_by: str = "") -> BreakerState:
        """Set RED. If it is RED already, the first cause is kept (it is the one to fix)."""
        for _ in range(5):
            current = self.state()
            if current.is_red:
                return current
            new = BreakerState(
                pipeline=self.pipeline,
                status=RED,
                reason=reason[:1000],
                batch_id=batch_id,
                run_id=run_id,
                tripped_at=_now(),
                tripped_by=tripped_by or operator_name(),
                reset_at=current.reset_at,
                reset_by=current.reset_by,
                reset_reason=current.reset_reason,
                version=current.version + 1,
            )
            try:
                self._write(current, new)
                return new
            except BreakerConflictError:
                continue
        raise BreakerConflictError(f"could not trip breaker {self.pipeline}: too many concurrent changes")

    def reset(self, reason: str, operator: str | None = None) -> BreakerState:
        """Set GREEN, recording who and why. Resetting a GREEN breaker records the reset too."""
        if not reason.strip():
            raise ValueError("a breaker reset needs a reason")
        current = self.state()
        new = BreakerState(
            pipeline=self.pipeline,
            status=GREEN,
            reason=current.reason,
            batch_id=current.batch_id,
            run_id=current.run_id,
            tripped_at=current.tripped_at,
            tripped_by=current.tripped_by,
            reset_at=_now(),
            reset_by=operator or operator_name(),
            reset_reason=reason,
            version=current.version + 1,
        )
        self._write(current, new)
        return new


def breaker_failure(state: BreakerState) -> Failure:
    """The fail-fast error for a RED breaker: who tripped it, why, and how to reset it."""
    return Failure(
        description=(
            f"Circuit breaker for pipeline '{state.pipeline}' is RED (tripped by {state.tripped_by} at "
            f"{state.tripped_at}, batch {state.batch_id or '-'}): {state.reason}. Fix the cause, then reset it: "
            f"`data-patcher resume-pipeline --pipeline {state.pipeline} --reason '<why>'` (reset and re-drive) "
            f"or `wap-pipeline breaker reset --reason '<why>'` (reset only)."
        ),
        metadata={
            "breaker_status": state.status,
            "tripped_by": state.tripped_by,
            "tripped_at": state.tripped_at,
            "tripped_batch": state.batch_id,
            "tripped_run": MetadataValue.text(state.run_id),
            "reason": MetadataValue.text(state.reason),
            "reset_command": MetadataValue.text(
                f"data-patcher resume-pipeline --pipeline {state.pipeline} --reason '<why>'"
            ),
        },
        allow_retries=False,
    )


class CircuitBreakerResource(ConfigurableResource):
    """The breaker of ``pipeline`` (default: the settings' pipeline name)."""

    config: SettingsResource
    pipeline: str | None = None

    _breaker: CircuitBreaker | None = PrivateAttr(default=None)

    def breaker(self) -> CircuitBreaker:
        if self._breaker is None:
            settings = self.config.settings()
            self._breaker = CircuitBreaker(
                aws.client("dynamodb", settings),
                settings.breaker_table,
                self.pipeline or settings.pipeline_name,
            )
        return self._breaker

    def ensure_green(self) -> None:
        """Raise the fail-fast Failure when RED. Call it first thing, before reading any input."""
        state = self.breaker().state()
        if state.is_red:
            raise breaker_failure(state)
