"""operations/*: the pipeline's own health as assets -- DLQ, circuit breaker, quarantine -- so the UI
shows it next to the tables and plots it over time."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from wap_pipeline.ingest import dlq
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.ingest.forwarder_breaker import forwarder_breaker
from wap_pipeline.resources import AwsResource, CircuitBreakerResource, QuarantineResource

DLQ_KEY = AssetKey(["operations", "dlq"])
DLQ_CHECK = "dlq_depth_below_threshold"
# Browsing the DLQ to find the oldest message reads at most this many messages.
_AGE_SAMPLE = 100


@asset(
    key=DLQ_KEY,
    group_name="operations",
    owners=["team:data-platform"],
    kinds={"sqs"},
    description=(
        "Depth of the ingest dead-letter queue and the age of its oldest message. Messages land here "
        "after failing to parse `maxReceiveCount` times (malformed JSON, oversized, too deep)."
    ),
    check_specs=[
        AssetCheckSpec(
            DLQ_CHECK,
            asset=DLQ_KEY,
            description=(
                "WARN from `WAP_DLQ_WARN_DEPTH` messages, ERROR from `WAP_DLQ_ERROR_DEPTH`. Inspect with "
                "`data-patcher dlq list`; purge garbage with `data-patcher dlq purge --yes`; after a fix, "
                "`data-patcher dlq redrive` (keeps the original message id)."
            ),
        )
    ],
)
def dlq_depth(context: AssetExecutionContext, aws: AwsResource):
    settings = aws.settings()
    sqs = aws.client("sqs")
    url = aws.queue_url(settings.dlq_name)
    depth = sum(sqs_calls.depth(sqs, url))  # visible + in flight
    sample = dlq.browse(sqs, url, limit=_AGE_SAMPLE) if depth else []
    age = dlq.oldest_age_s(sample)
    metadata = {
        "dlq_depth": depth,
        "oldest_message_age_s": MetadataValue.float(round(age, 1) if age is not None else 0.0),
        "age_sampled_messages": len(sample),
    }
    severity = AssetCheckSeverity.ERROR if depth >= settings.dlq_error_depth else AssetCheckSeverity.WARN
    yield MaterializeResult(metadata=metadata)
    yield AssetCheckResult(
        check_name=DLQ_CHECK,
        passed=depth < settings.dlq_warn_depth,
        severity=severity,
        metadata={**metadata, "warn_depth": settings.dlq_warn_depth, "error_depth": settings.dlq_error_depth},
    )


BREAKER_KEY = AssetKey(["operations", "circuit_breaker"])
BREAKER_CHECK = "breaker_green"
QUARANTINE_KEY = AssetKey(["operations", "quarantine"])


@asset(
    key=BREAKER_KEY,
    group_name="operations",
    owners=["team:data-platform"],
    kinds={"dynamodb"},
    description=(
        "State of the pipeline's circuit breaker (DynamoDB): GREEN lets batches through; RED stops every "
        "table materialization until an operator resets it. `is_red` plots trips over time. Also the "
        "forwarder's breaker (`forwarder`, `forwarder_paused`): OPEN while Firehose is down, so that no "
        "message spends its receives on an outage; it closes by itself when a probe finds Firehose back."
    ),
    check_specs=[
        AssetCheckSpec(
            BREAKER_CHECK,
            asset=BREAKER_KEY,
            description=(
                "Failed means the breaker is RED: a batch failed for good and later batches are stopped. "
                "The metadata says which batch, why and who tripped it. Fix the cause (see docs/runbook.md), "
                "then `data-patcher resume-pipeline --pipeline standard_ingest --reason '...'`."
            ),
        )
    ],
)
def circuit_breaker_state(aws: AwsResource, breaker: CircuitBreakerResource):
    state = breaker.breaker().state()
    forwarder = forwarder_breaker(aws.client("dynamodb"), aws.settings()).state()
    metadata = {
        # The forwarder's own breaker (opens while Firehose is down; closes by itself).
        "forwarder": forwarder.status,
        "forwarder_paused": int(forwarder.is_open),
        "forwarder_reason": MetadataValue.text(forwarder.reason[:500]),
        "status": state.status,
        "is_red": int(state.is_red),
        "reason": MetadataValue.text(state.reason[:1000]),
        "tripped_batch": state.batch_id,
        "tripped_by": state.tripped_by,
        "tripped_at": state.tripped_at,
        "reset_by": state.reset_by,
        "reset_at": state.reset_at,
        "version": state.version,
    }
    yield MaterializeResult(metadata=metadata)
    yield AssetCheckResult(
        check_name=BREAKER_CHECK,
        passed=not state.is_red,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
    )


@asset(
    key=QUARANTINE_KEY,
    group_name="operations",
    owners=["team:data-platform"],
    kinds={"dynamodb"},
    description=(
        "Size of the quarantine (DynamoDB): record ids masked from standardized unless they come back as a "
        "replay data-patcher issued (a producer's own `is_replay` does not count). Manage with "
        "`data-patcher quarantine add|list|remove`."
    ),
)
def quarantine_size(quarantine: QuarantineResource) -> MaterializeResult:
    entries = quarantine.quarantine().entries()
    newest = sorted(entries, key=lambda e: e.added_at, reverse=True)[:10]
    return MaterializeResult(
        metadata={
            "quarantined_ids": len(entries),
            "newest": MetadataValue.json(
                [{"id": e.record_id, "reason": e.reason, "by": e.added_by, "at": e.added_at} for e in newest]
            ),
        }
    )
