"""Tables created by an older version gain the columns added since, once, keeping their rows; and only
provisioning creates tables."""

from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest
from pyiceberg.schema import Schema

from wap_pipeline.iceberg.schemas import (
    RAW_SCHEMA,
    RAW_TABLE,
    TablesNotProvisionedError,
    create_tables,
    load_tables,
    top_level_columns,
)
from wap_pipeline.rules.envelope import landing_line, raw_rows, raw_table, to_landing_record

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def landed(attributes: dict[str, str]) -> bytes:
    message = {
        "MessageId": "m1",
        "Body": orjson.dumps({"event_id": "e1"}).decode(),
        "Attributes": {"SentTimestamp": "1764417600000"},
        "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    }
    return landing_line(to_landing_record(message))


def test_a_raw_table_from_before_replay_tokens_gains_the_column(catalog):
    before = Schema(*[f for f in RAW_SCHEMA.fields if f.name != "replay_token"])
    catalog.create_namespace(RAW_TABLE[0])
    old = catalog.create_table(RAW_TABLE, schema=before)
    old.append(pa.Table.from_pylist(raw_rows(landed({}), "landing/old", "b0", NOW), schema=before.as_arrow()))

    raw = create_tables(catalog)["raw"]
    assert top_level_columns(raw.schema()) == top_level_columns(RAW_SCHEMA)
    raw.append(raw_table(landed({"replay_token": "tok"}), "landing/new", "b1", NOW, RAW_SCHEMA.as_arrow()))
    rows = raw.scan(selected_fields=("batch_id", "replay_token")).to_arrow().sort_by("batch_id").to_pylist()
    assert rows == [{"batch_id": "b0", "replay_token": None}, {"batch_id": "b1", "replay_token": "tok"}]
    schema_id = raw.schema().schema_id
    assert create_tables(catalog)["raw"].schema().schema_id == schema_id, "evolved once"


def test_steps_never_create_a_table_a_missing_one_names_provision(catalog):
    """Only provisioning runs DDL (issue 16): loading the tables of an unprovisioned catalog fails with
    the command to run, and creates nothing."""
    with pytest.raises(TablesNotProvisionedError, match="wap-pipeline provision"):
        load_tables(catalog)
    assert catalog.list_namespaces() == []
    create_tables(catalog)
    assert set(load_tables(catalog)) == {"raw", "standardized", "curated", "daily_totals"}
