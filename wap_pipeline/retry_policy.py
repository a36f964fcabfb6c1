"""The steps' retry policy.

A ``RetryPolicy`` is part of an op's or asset's definition, fixed when Dagster imports the module that
declares it, so it cannot come from a resource: it is read from the code location's environment then
(``WAP_STEP_RETRIES``, ``WAP_STEP_RETRY_DELAY_S``), the one place outside :mod:`wap_pipeline.definitions`
that does so.
"""

from __future__ import annotations

from dagster import Backoff, Jitter, RetryPolicy

from wap_pipeline.settings import Settings


def transient_retry_policy(settings: Settings | None = None) -> RetryPolicy:
    """Retry a failed step with exponential backoff; a `Failure(allow_retries=False)` is never retried."""
    settings = settings or Settings.from_env()
    return RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.step_retry_delay_s,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )
