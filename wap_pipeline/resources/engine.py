"""The engine as a resource: which engine computes standardized and curated (``WAP_ENGINE`` wins)."""

from __future__ import annotations

from dagster import ConfigurableResource

from wap_pipeline.engines import Engine, resolve_engine
from wap_pipeline.settings import Settings


class EngineResource(ConfigurableResource):
    """``engine``: "arrow" (default) or "spark"; the ``WAP_ENGINE`` environment variable overrides it.

    ``spark_config``: extra Spark settings (``spark.master``, memory, ...) used when this process's
    SparkContext is created by dagster-pyspark's ``PySparkResource``. Spark is never started for arrow.
    """

    engine: str | None = None
    spark_config: dict[str, str] | None = None

    def name(self) -> str:
        return resolve_engine(self.engine)

    def get(self) -> Engine:
        if self.name() == "spark":
            from wap_pipeline.engines.spark import SparkEngine

            return SparkEngine.from_settings(Settings.from_env(), self.spark_config)
        from wap_pipeline.engines.arrow import ArrowEngine

        return ArrowEngine()
