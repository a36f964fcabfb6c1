"""Engine selection and the Spark catalog configuration derived from PyIceberg's (no JVM here)."""

import pytest

from wap_pipeline.engines import resolve_engine
from wap_pipeline.engines.spark import base_spark_config, catalog_spark_config
from wap_pipeline.resources import EngineResource, settings_resource
from wap_pipeline.settings import Settings


def test_an_unknown_engine_is_refused_where_it_is_named():
    assert resolve_engine("spark") == "spark"
    with pytest.raises(ValueError, match="WAP_ENGINE"):
        Settings.from_env({"WAP_ENGINE": "flink"})
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("flink")


def test_the_resources_engine_wins_over_the_settings_which_read_wap_engine(monkeypatch):
    """WAP_ENGINE is read once, into the settings the code location is wired with; a resource's own
    configuration (the launchpad's) wins over it, and the process environment does not (issue 16)."""
    spark_settings = settings_resource(Settings.from_env({"WAP_ENGINE": "spark"}))
    assert EngineResource(config=spark_settings).name() == "spark"
    assert EngineResource(config=spark_settings, engine="arrow").get().name == "arrow"
    monkeypatch.setenv("WAP_ENGINE", "arrow")
    assert EngineResource(config=spark_settings).name() == "spark"
    assert EngineResource(config=settings_resource(Settings())).name() == "arrow"


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


def test_day_chunks_hold_one_day_each_bounded_and_every_row_once():
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from wap_pipeline.engines.arrow import day_chunks

    start = datetime(2026, 11, 20, 23, tzinfo=UTC)
    times = [start + timedelta(hours=7 * i % 100) for i in range(50)] + [None]
    rows = pa.table(
        {"event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")), "n": pa.array(range(51))}
    )
    pieces = list(day_chunks(rows, max_bytes=int(rows.nbytes / 51 * 4)))
    assert sorted(n for piece in pieces for n in piece["n"].to_pylist()) == list(range(51))
    for piece in pieces:
        assert piece.num_rows <= 4
        days = {t.date() if t else None for t in piece["event_timestamp"].to_pylist()}
        assert len(days) == 1, days
    assert list(day_chunks(rows.slice(0, 0))) == []
    some = pa.array([40, 3, 17, 3 + 14], pa.int64())
    taken = [n for piece in day_chunks(rows, some) for n in piece["n"].to_pylist()]
    assert sorted(taken) == [3, 17, 17, 40], "only (and every one of) the given rows"


def test_spark_master_comes_from_wap_spark_master():
    assert Settings.from_env({}).spark_master == "local[*]"
    master = Settings.from_env({"WAP_SPARK_MASTER": "spark://127.0.0.1:7077"}).spark_master
    assert base_spark_config(with_jars=False, master=master)["spark.master"] == "spark://127.0.0.1:7077"
    # Empty: the master spark-submit was given (Glue, EMR) is left alone.
    empty = Settings.from_env({"WAP_SPARK_MASTER": ""}).spark_master
    assert "spark.master" not in base_spark_config(with_jars=False, master=empty)
