"""Engine selection and the Spark catalog configuration derived from PyIceberg's (no JVM here)."""

import pytest

from wap_pipeline.engines import resolve_engine
from wap_pipeline.engines.spark import catalog_spark_config
from wap_pipeline.resources import EngineResource
from wap_pipeline.settings import Settings


def test_environment_overrides_resource_config_which_overrides_the_default():
    assert resolve_engine(None, environ={}) == "arrow"
    assert resolve_engine("spark", environ={}) == "spark"
    assert resolve_engine("arrow", environ={"WAP_ENGINE": "spark"}) == "spark"
    assert resolve_engine("spark", environ={"WAP_ENGINE": "arrow"}) == "arrow"
    with pytest.raises(ValueError, match="WAP_ENGINE"):
        resolve_engine(None, environ={"WAP_ENGINE": "flink"})
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("flink", environ={})


def test_engine_resource_reads_the_environment(monkeypatch):
    monkeypatch.delenv("WAP_ENGINE", raising=False)
    assert EngineResource().name() == "arrow"
    assert EngineResource(engine="spark").name() == "spark"
    monkeypatch.setenv("WAP_ENGINE", "arrow")
    assert EngineResource(engine="spark").name() == "arrow"
    assert EngineResource(engine="spark").get().name == "arrow"
    assert Settings.from_env({"WAP_ENGINE": "spark"}).engine == "spark"


def test_sqlite_catalog_is_read_through_iceberg_jdbc(tmp_path):
    conf = catalog_spark_config(
        "wap",
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/wh"},
    )
    assert conf == {
        "spark.sql.catalog.wap": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.wap.type": "jdbc",
        "spark.sql.catalog.wap.uri": f"jdbc:sqlite:{tmp_path}/catalog.db",
        "spark.sql.catalog.wap.warehouse": f"file://{tmp_path}/wh",
        "spark.sql.catalog.wap.jdbc.init-catalog-tables": "false",
        "spark.sql.catalog.wap.cache-enabled": "false",
    }


def test_postgresql_and_glue_catalogs():
    conf = catalog_spark_config(
        "wap",
        {
            "type": "sql",
            "uri": "postgresql+psycopg2://etl:s3cret@db.internal:5433/lake",
            "warehouse": "file:///w",
        },
    )
    assert conf["spark.sql.catalog.wap.uri"] == "jdbc:postgresql://db.internal:5433/lake"
    assert (conf["spark.sql.catalog.wap.jdbc.user"], conf["spark.sql.catalog.wap.jdbc.password"]) == (
        "etl",
        "s3cret",
    )
    assert conf["spark.sql.catalog.wap.jdbc.init-catalog-tables"] == "false"

    glue = catalog_spark_config("wap", {"type": "glue", "warehouse": "s3://wap-warehouse/", "glue.id": "123"})
    assert glue["spark.sql.catalog.wap.type"] == "glue"
    assert glue["spark.sql.catalog.wap.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert glue["spark.sql.catalog.wap.glue.id"] == "123"

    with pytest.raises(ValueError, match="in a file"):
        catalog_spark_config("wap", {"type": "sql", "uri": "sqlite:///:memory:"})
    with pytest.raises(ValueError, match="rest"):
        catalog_spark_config("wap", {"type": "rest", "uri": "http://x"})
