"""What every step does around its own work: fail fast on a RED breaker, trip the breaker when it
finally fails (after the retries of :mod:`wap_pipeline.retry_policy`, asked for here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, Failure, RetryRequested

from wap_pipeline.resources.breaker import CircuitBreakerResource
from wap_pipeline.retry_policy import retried_when_transient


@contextmanager
def guarded_by_breaker(context: AssetExecutionContext, breaker: CircuitBreakerResource) -> Iterator[None]:
    """Check the breaker before any input is read; trip it when the step fails for good."""
    breaker.ensure_green()
    try:
        with retried_when_transient(context, breaker.config.settings()):
            yield
    except RetryRequested:
        raise  # retried (a transient error, a publish conflict): not a reason to stop the pipeline
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
