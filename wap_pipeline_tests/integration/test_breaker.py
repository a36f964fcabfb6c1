import pytest

from wap_pipeline import aws
from wap_pipeline.resources.breaker import BreakerConflictError, CircuitBreaker, breaker_failure

pytestmark = pytest.mark.integration


def breaker(stack) -> CircuitBreaker:
    return CircuitBreaker(aws.client("dynamodb", stack), stack.breaker_table, stack.pipeline_name)


def test_first_trip_wins_and_reset_is_recorded(stack):
    assert breaker(stack).state().status == "GREEN"
    first = breaker(stack).trip(
        "schema mismatch in amount_minor", batch_id="b1", run_id="r1", tripped_by="dagster:a"
    )
    second = breaker(stack).trip(
        "a later batch failed fast", batch_id="b2", run_id="r2", tripped_by="dagster:b"
    )
    assert second == first, "while RED the first cause is kept: it is the one to fix"
    state = breaker(stack).state()
    assert (state.status, state.batch_id, state.tripped_by, state.version) == ("RED", "b1", "dagster:a", 1)
    failure = breaker_failure(state)
    assert "dagster:a" in failure.description and "data-patcher resume-pipeline" in failure.description
    assert failure.metadata["tripped_batch"].value == "b1"

    with pytest.raises(ValueError):
        breaker(stack).reset("   ")
    reset = breaker(stack).reset("schema evolved", operator="alice")
    assert (reset.status, reset.reset_by, reset.reset_reason, reset.version) == (
        "GREEN",
        "alice",
        "schema evolved",
        2,
    )
    assert reset.reason == "schema mismatch in amount_minor", "the last trip stays on record"


def test_a_write_based_on_a_stale_read_is_refused(stack):
    writer = breaker(stack)
    stale = writer.state()
    breaker(stack).trip("someone else", tripped_by="other")
    with pytest.raises(BreakerConflictError):
        writer._write(
            stale, stale.__class__(**{**stale.__dict__, "status": "GREEN", "version": stale.version + 1})
        )
    assert breaker(stack).state().tripped_by == "other"
