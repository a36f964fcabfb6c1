"""The Iceberg catalog as a resource (configuration: see :mod:`wap_pipeline.iceberg.catalog`)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pyiceberg.table import Table

from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import ensure_tables
from wap_pipeline.settings import Settings


class IcebergCatalogResource(ConfigurableResource):
    def tables(self) -> dict[str, Table]:
        """raw / standardized / curated, created on first use."""
        return ensure_tables(load_wap_catalog(Settings.from_env()))
