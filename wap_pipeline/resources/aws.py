"""AWS clients for assets and sensors, built from the project settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from wap_pipeline import aws
from wap_pipeline.ingest.landing import batch_ids_after
from wap_pipeline.provision import queue_url
from wap_pipeline.settings import Settings


class AwsResource(ConfigurableResource):
    """Settings come from the environment (``WAP_PROFILE``, ``WAP_*`` names, ``AWS_*``)."""

    def settings(self) -> Settings:
        return Settings.from_env()

    def client(self, service: str):
        return aws.client(service, self.settings())

    def queue_url(self, name: str | None = None) -> str:
        return queue_url(self.client("sqs"), name or self.settings().queue_name)

    def alerts_topic_arn(self) -> str:
        """The alerts topic's ARN, built from the caller's account (GetCallerIdentity needs no permission)."""
        settings = self.settings()
        account = self.client("sts").get_caller_identity()["Account"]
        return f"arn:aws:sns:{settings.region}:{account}:{settings.alerts_topic}"

    def batch_ids_after(self, last_batch_id: str) -> list[str]:
        """Every batch (manifest) id after ``last_batch_id``, oldest first: what a table's ledger may
        advance its watermark over (:meth:`wap.Ledger.with_batch`)."""
        settings = self.settings()
        return batch_ids_after(
            self.client("s3"), settings.landing_bucket, settings.manifests_prefix, last_batch_id
        )
