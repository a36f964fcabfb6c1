"""The Iceberg catalog as a resource (configuration: see :mod:`wap_pipeline.iceberg.catalog`).

The catalog is loaded once per resource instance; the tables must exist (``wap-pipeline provision``
creates them): no step or check runs DDL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from dagster import AssetExecutionContext, ConfigurableResource, OpExecutionContext
from pydantic import PrivateAttr
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.lease import writing_to
from wap_pipeline.iceberg.schemas import load_tables
from wap_pipeline.resources.settings import SettingsResource


class IcebergCatalogResource(ConfigurableResource):
    config: SettingsResource

    _catalog: Catalog | None = PrivateAttr(default=None)

    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_wap_catalog(self.config.settings())
        return self._catalog

    def tables(self) -> dict[str, Table]:
        """raw / standardized / curated / daily_totals, as provisioned."""
        return load_tables(self.catalog())

    @contextmanager
    def writing(
        self, context: AssetExecutionContext | OpExecutionContext, *layers: str
    ) -> Iterator[Mapping[str, Table]]:
        """The tables, this step holding the writer lease of ``layers`` (see
        :mod:`wap_pipeline.iceberg.lease`): read and decide inside, every commit is fenced."""
        with writing_to(
            self.config.settings(), f"run {context.run_id}", *layers, catalog=self.catalog()
        ) as tables:
            yield tables
