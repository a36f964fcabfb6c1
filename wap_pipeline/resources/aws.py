"""AWS clients for assets and sensors, built from the settings resource, once per resource instance
(Dagster builds the resources once per run, and once per sensor evaluation)."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from wap_pipeline import aws
from wap_pipeline.ingest.landing import batch_ids_after
from wap_pipeline.provision import queue_url
from wap_pipeline.resources.settings import SettingsResource
from wap_pipeline.settings import Settings


class AwsResource(ConfigurableResource):
    config: SettingsResource

    _clients: dict[str, Any] = PrivateAttr(default_factory=dict)

    def settings(self) -> Settings:
        return self.config.settings()

    def client(self, service: str):
        """This resource's client of ``service``, made on first use (boto3 clients are thread-safe)."""
        if service not in self._clients:
            self._clients[service] = aws.client(service, self.settings())
        return self._clients[service]

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
