"""Unit-test fixtures: a real Iceberg catalog (SQLite, in the test's temporary directory)."""

import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table

from wap_pipeline.iceberg.schemas import create_tables


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return load_catalog(
        "test", type="sql", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}"
    )


@pytest.fixture
def curated(catalog: Catalog) -> Table:
    return create_tables(catalog)["curated"]
