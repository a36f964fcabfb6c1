"""Small Dagster resources; each wraps a plain class the CLIs use too."""

from wap_pipeline.resources.aws import AwsResource
from wap_pipeline.resources.breaker import CircuitBreakerResource
from wap_pipeline.resources.catalog import IcebergCatalogResource
from wap_pipeline.resources.engine import EngineResource
from wap_pipeline.resources.quarantine import QuarantineResource
from wap_pipeline.resources.settings import SettingsResource, settings_resource

__all__ = [
    "AwsResource",
    "CircuitBreakerResource",
    "EngineResource",
    "IcebergCatalogResource",
    "QuarantineResource",
    "SettingsResource",
    "settings_resource",
]
