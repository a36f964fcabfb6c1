"""How a step retries a transient failure, decided when it fails, from the run's own settings.

A ``RetryPolicy`` on an op or asset is part of its definition, fixed when a process imports the module
that declares it -- so it came from that process's environment, whatever the run's resources said. The
step raises ``dagster.RetryRequested`` instead, with the delay and the count of the settings resource
(``step_retries``, ``step_retry_delay_s``): the Dagster UI shows the same "up for retry" events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure, OpExecutionContext, RetryRequested

from wap_pipeline.settings import Settings


def retry_request(settings: Settings, retry_number: int, error: Exception) -> RetryRequested | None:
    """The retry of a step whose attempt ``retry_number`` (0 the first) failed with ``error``: after
    ``step_retry_delay_s``, doubling each time, +-50 % jitter. None when it is not retried: the retries
    are spent, or the error is a ``Failure(allow_retries=False)`` (a verdict, not a transient error)."""
    if isinstance(error, Failure) and not error.allow_retries:
        return None
    if retry_number >= settings.step_retries:
        return None
    delay = settings.step_retry_delay_s * 2**retry_number * random.uniform(0.5, 1.5)
    return RetryRequested(max_retries=settings.step_retries, seconds_to_wait=delay)


@contextmanager
def retried_when_transient(context: OpExecutionContext, settings: Settings) -> Iterator[None]:
    """Turn a failure of the block into a retry request while retries are left (see :func:`retry_request`)."""
    try:
        yield
    except RetryRequested:
        raise  # the step asked for its own retry (a publish conflict)
    except Exception as error:
        retry = retry_request(settings, context.retry_number, error)
        if retry is None:
            raise
        context.log.warning(
            f"attempt {context.retry_number + 1} failed, will retry in {retry.seconds_to_wait:.1f}s: {error}"
        )
        raise retry from error
