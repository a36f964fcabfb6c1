"""The same WAP cycle on every catalog kind, each chosen by PyIceberg configuration alone."""

import pytest

from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.settings import Settings
from wap_pipeline_tests import wap_cases

pytestmark = pytest.mark.integration


def configure(monkeypatch, **properties: str) -> None:
    for key, value in properties.items():
        monkeypatch.setenv(
            f"PYICEBERG_CATALOG__WAP__{key.upper().replace('.', '__').replace('-', '_')}", value
        )


def test_default_is_sqlite_under_the_state_dir(stack):
    catalog = load_wap_catalog(Settings.from_env())
    assert catalog.properties["uri"].startswith("sqlite:///") and stack.state_dir in catalog.properties["uri"]
    wap_cases.full_cycle(catalog)


@pytest.mark.postgres
def test_postgresql_catalog(stack, monkeypatch, postgres_database, tmp_path):
    configure(monkeypatch, type="sql", uri=postgres_database, warehouse=f"file://{tmp_path}/pg-warehouse")
    catalog = load_wap_catalog(Settings.from_env())
    assert catalog.properties["uri"] == postgres_database
    wap_cases.full_cycle(catalog)


@pytest.mark.postgres
def test_postgresql_catalog_refuses_a_publish_when_main_moved(
    stack, monkeypatch, postgres_database, tmp_path
):
    configure(monkeypatch, type="sql", uri=postgres_database, warehouse=f"file://{tmp_path}/pg-warehouse")
    wap_cases.refuses_when_main_moved(load_wap_catalog(Settings.from_env()))


@pytest.mark.postgres
def test_postgresql_catalog_keeps_the_compare_and_swap(stack, monkeypatch, postgres_database, tmp_path):
    configure(monkeypatch, type="sql", uri=postgres_database, warehouse=f"file://{tmp_path}/pg-warehouse")
    wap_cases.stale_handle_cannot_discard_a_concurrent_commit(load_wap_catalog(Settings.from_env()))


def test_sqlite_catalog_refuses_a_publish_when_main_moved(stack):
    wap_cases.refuses_when_main_moved(load_wap_catalog(Settings.from_env()))


def test_glue_catalog_with_s3_warehouse_on_the_local_server(stack, monkeypatch):
    endpoint = stack.endpoint_url
    configure(
        monkeypatch,
        type="glue",
        warehouse=f"s3://{stack.warehouse_bucket}/",
        **{
            "glue.endpoint": endpoint,
            "glue.region": stack.region,
            "glue.access-key-id": "testing",
            "glue.secret-access-key": "testing",
            "s3.endpoint": endpoint,
            "s3.region": stack.region,
            "s3.access-key-id": "testing",
            "s3.secret-access-key": "testing",
        },
    )
    catalog = load_wap_catalog(Settings.from_env())
    assert type(catalog).__name__ == "GlueCatalog"
    wap_cases.full_cycle(catalog)
