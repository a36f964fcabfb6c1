"""operations/*: the pipeline's own health as assets, so the UI plots it over time."""

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
from wap_pipeline.resources import AwsResource

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
    depth = dlq.depth(sqs, url)
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
