"""Load the Iceberg catalog from PyIceberg's own configuration, with an embedded default.

Configuration comes from ``.pyiceberg.yaml`` or ``PYICEBERG_CATALOG__<NAME>__*`` variables, as
PyIceberg documents. When the catalog named by ``WAP_CATALOG_NAME`` (default ``wap``) is not
configured at all, a SqlCatalog on SQLite under the state directory is used, so a fresh checkout
works with no setup. PostgreSQL and Glue are configuration only, e.g.::

    PYICEBERG_CATALOG__WAP__TYPE=sql
    PYICEBERG_CATALOG__WAP__URI=postgresql+psycopg2://postgres@127.0.0.1:5432/wap

    PYICEBERG_CATALOG__WAP__TYPE=glue
    PYICEBERG_CATALOG__WAP__WAREHOUSE=s3://wap-warehouse/
"""

from __future__ import annotations

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.utils.config import Config

from wap_pipeline.settings import Settings


def default_catalog_properties(settings: Settings) -> dict[str, str]:
    state = settings.state_path
    (state / "warehouse").mkdir(parents=True, exist_ok=True)
    return {
        "type": "sql",
        "uri": f"sqlite:///{state / 'catalog.db'}",
        "warehouse": f"file://{state / 'warehouse'}",
    }


def configured_properties(name: str) -> dict[str, str] | None:
    """The catalog's properties from ``.pyiceberg.yaml`` / ``PYICEBERG_CATALOG__*``, read now.

    PyIceberg's own ``load_catalog`` reads the environment once, at import; reading it here at call
    time keeps a changed configuration (a test, a long-lived process) honoured.
    """
    return Config().get_catalog_config(name)


def load_wap_catalog(settings: Settings | None = None) -> Catalog:
    settings = settings or Settings.from_env()
    properties = configured_properties(settings.catalog_name) or default_catalog_properties(settings)
    return load_catalog(settings.catalog_name, **properties)
