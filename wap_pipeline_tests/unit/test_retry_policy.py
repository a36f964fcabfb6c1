"""A step's retries come from the run's settings when it fails, not from the environment at import."""

from __future__ import annotations

import pytest
from dagster import Failure

from wap_pipeline.retry_policy import retry_request
from wap_pipeline.settings import Settings


def test_a_transient_failure_is_retried_after_the_settings_delay_doubling_until_the_retries_are_spent():
    settings = Settings(step_retries=3, step_retry_delay_s=0.2)
    waits = []
    for attempt in range(3):
        request = retry_request(settings, attempt, ConnectionError("reset by peer"))
        assert request is not None and request.max_retries == 3
        waits.append(request.seconds_to_wait)
    for attempt, wait in enumerate(waits):
        assert 0.1 * 2**attempt <= wait <= 0.3 * 2**attempt  # 0.2 s doubling, +-50 % jitter
    assert retry_request(settings, 3, ConnectionError("reset by peer")) is None


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (Failure("audit failed", allow_retries=False), False),
        (Failure("partial put", allow_retries=True), True),
    ],
)
def test_a_verdict_is_never_retried(error, retried):
    assert (retry_request(Settings(), 0, error) is not None) is retried


def test_the_delay_is_the_settings_of_the_run_not_of_the_process(monkeypatch):
    monkeypatch.setenv("WAP_STEP_RETRY_DELAY_S", "30")
    request = retry_request(Settings(step_retry_delay_s=0.2), 0, TimeoutError())
    assert request is not None and request.seconds_to_wait <= 0.3
