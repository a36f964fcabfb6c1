"""The Iceberg catalog as a resource (configuration: see :mod:`wap_pipeline.iceberg.catalog`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from dagster import AssetExecutionContext, ConfigurableResource, OpExecutionContext
from pyiceberg.table import Table

from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.lease import writing_to
from wap_pipeline.iceberg.schemas import ensure_tables
from wap_pipeline.settings import Settings


class IcebergCatalogResource(ConfigurableResource):
    def tables(self) -> dict[str, Table]:
        """raw / standardized / curated, created on first use."""
        return ensure_tables(load_wap_catalog(Settings.from_env()))

    @contextmanager
    def writing(
        self, context: AssetExecutionContext | OpExecutionContext, *layers: str
    ) -> Iterator[Mapping[str, Table]]:
        """The tables, this step holding the writer lease of ``layers`` (see
        :mod:`wap_pipeline.iceberg.lease`): read and decide inside, every commit is fenced."""
        with writing_to(Settings.from_env(), f"run {context.run_id}", *layers) as tables:
            yield tables
