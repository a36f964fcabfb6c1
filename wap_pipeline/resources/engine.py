"""The engine as a resource: which engine computes standardized and curated."""

from __future__ import annotations

from dagster import ConfigurableResource

from wap_pipeline.engines import Engine, resolve_engine
from wap_pipeline.resources.settings import SettingsResource


class EngineResource(ConfigurableResource):
    """``engine``: "arrow" or "spark"; unset, the settings' engine (``WAP_ENGINE`` where the code
    location was loaded, arrow by default).

    ``spark_config``: extra Spark settings (``spark.master``, memory, ...) used when this process's
    SparkContext is created by dagster-pyspark's ``PySparkResource``. Spark is never started for arrow.
    """

    config: SettingsResource
    engine: str | None = None
    spark_config: dict[str, str] | None = None

    def name(self) -> str:
        return resolve_engine(self.engine or self.config.settings().engine)

    def get(self) -> Engine:
        if self.name() == "spark":
            from wap_pipeline.engines.spark import SparkEngine

            return SparkEngine.from_settings(self.config.settings(), self.spark_config)
        from wap_pipeline.engines.arrow import ArrowEngine

        return ArrowEngine()
