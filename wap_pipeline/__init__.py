"""wap-pipeline: SQS -> Firehose -> S3 -> Iceberg (raw -> standardized -> curated) with Write-Audit-Publish."""
