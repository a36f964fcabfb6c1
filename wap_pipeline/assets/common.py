"""What every table asset does around its own work: fail fast on a RED breaker, trip it on failure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, Failure, RetryRequested

from wap_pipeline.resources.breaker import CircuitBreakerResource


@contextmanager
def guarded_by_breaker(context: AssetExecutionContext, breaker: CircuitBreakerResource) -> Iterator[None]:
    """Check the breaker before any input is read; trip it if the body fails."""
    breaker.ensure_green()
    try:
        yield
    except RetryRequested:
        raise  # a transient conflict the step retries itself; not a reason to stop the pipeline
    except Exception as error:
        reason = error.description if isinstance(error, Failure) and error.description else str(error)
        state = breaker.breaker().trip(
            reason=f"{context.asset_key.to_user_string()}: {reason}",
            batch_id=context.partition_key if context.has_partition_key else "",
            run_id=context.run.run_id,
            tripped_by=f"dagster:{context.asset_key.to_user_string()}",
        )
        context.log.error(f"circuit breaker {state.pipeline} is {state.status}: {state.reason[:300]}")
        raise
