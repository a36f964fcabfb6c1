"""AWS clients for assets and sensors, built from the project settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from wap_pipeline import aws
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
