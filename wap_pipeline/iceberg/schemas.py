"""Explicit Iceberg schemas for the three layers, and table creation.

raw          every landed record as it came (body verbatim) plus lineage
standardized typed event fields + lineage + the audit's invalid_flag / invalid_reasons
curated      one row per idempotency_key, partitioned by day of event_timestamp
daily totals events and amount per day, event_type and currency (recomputed for the days a batch touches)
"""

from __future__ import annotations

import contextlib

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

RAW_TABLE = ("raw", "events")
STANDARDIZED_TABLE = ("standardized", "events")
CURATED_TABLE = ("curated", "events")
DAILY_TOTALS_TABLE = ("curated", "daily_totals")

# Lineage columns that travel from raw through standardized.
_LINEAGE = [
    ("batch_id", StringType(), True),
    ("message_id", StringType(), False),
    ("original_message_id", StringType(), False),
    ("is_replay", BooleanType(), True),
    ("sent_timestamp", TimestamptzType(), False),
    ("receive_count", IntegerType(), False),
    ("landing_file_key", StringType(), True),
    ("line_number", LongType(), True),
    ("ingested_at", TimestamptzType(), True),
]

# The business event: what a producer sends. Fields are nullable so that an invalid row can be
# written to the audit branch and tagged; the audit keeps such rows off main.
EVENT_FIELDS = [
    ("event_id", StringType()),
    ("idempotency_key", StringType()),
    ("event_type", StringType()),
    ("event_timestamp", TimestamptzType()),
    ("account_id", StringType()),
    ("amount_minor", LongType()),
    ("currency", StringType()),
]


def _schema(columns: list[tuple]) -> Schema:
    return Schema(
        *[
            NestedField(field_id=i, name=name, field_type=kind, required=required)
            for i, (name, kind, required) in enumerate(columns, start=1)
        ]
    )


RAW_SCHEMA = _schema(
    [
        ("batch_id", StringType(), True),
        ("landing_file_key", StringType(), True),
        ("line_number", LongType(), True),
        ("message_id", StringType(), False),
        ("original_message_id", StringType(), False),
        ("idempotency_key", StringType(), False),
        ("is_replay", BooleanType(), True),
        ("sent_timestamp", TimestamptzType(), False),
        ("receive_count", IntegerType(), False),
        ("body", StringType(), False),
        ("ingested_at", TimestamptzType(), True),
        # data-patcher's replay grant (wap_pipeline.rules.replays); null on every other record
        ("replay_token", StringType(), False),
    ]
)

_INVALID_REASONS_ID = 1000

STANDARDIZED_SCHEMA = Schema(
    *_schema(
        [(name, kind, False) for name, kind in EVENT_FIELDS]
        + [("payload", StringType(), False)]
        + _LINEAGE
        + [("standardized_at", TimestamptzType(), True), ("invalid_flag", BooleanType(), True)]
    ).fields,
    NestedField(
        field_id=len(EVENT_FIELDS) + 1 + len(_LINEAGE) + 3,
        name="invalid_reasons",
        field_type=ListType(element_id=_INVALID_REASONS_ID, element_type=StringType(), element_required=True),
        required=False,
    ),
)

CURATED_SCHEMA = _schema(
    [(name, kind, False) for name, kind in EVENT_FIELDS]
    + [("payload", StringType(), False)]
    + [
        ("batch_id", StringType(), True),
        ("message_id", StringType(), False),
        ("original_message_id", StringType(), False),
        ("is_replay", BooleanType(), True),
        ("sent_timestamp", TimestamptzType(), False),
        ("curated_at", TimestamptzType(), True),
    ]
)

DAILY_TOTALS_SCHEMA = _schema(
    [
        ("event_date", DateType(), True),
        ("event_type", StringType(), False),
        ("currency", StringType(), False),
        ("events", LongType(), True),
        ("amount_minor", LongType(), True),
    ]
)

# Columns of standardized that are not fields of the producer's event.
STANDARDIZED_SYSTEM_COLUMNS = frozenset(
    {"payload", "standardized_at", "invalid_flag", "invalid_reasons"} | {name for name, _, _ in _LINEAGE}
)


def _by_batch(schema: Schema) -> PartitionSpec:
    field = schema.find_field("batch_id")
    return PartitionSpec(
        PartitionField(
            source_id=field.field_id, field_id=1000, transform=IdentityTransform(), name="batch_id"
        )
    )


def _by_event_day(schema: Schema) -> PartitionSpec:
    """Curated's layout: a batch's deduplication lookups and a day's totals read only their days."""
    field = schema.find_field("event_timestamp")
    return PartitionSpec(
        PartitionField(source_id=field.field_id, field_id=1000, transform=DayTransform(), name="event_day")
    )


# No silent rebase: PyIceberg retries a commit that lost the compare-and-swap by rebuilding it on the
# new head without re-checking what it planned (verified-facts: a curated merge planned "key K is new"
# by two writers then committed K twice). With no retries the losing commit fails, and the step's own
# retry re-plans against the new head (its "already done?" checks see the winner's commit).
TABLE_PROPERTIES = {"commit.retry.num-retries": "0"}


def _ensure(
    catalog: Catalog, identifier: tuple[str, str], schema: Schema, spec: PartitionSpec | None
) -> Table:
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(identifier[0])
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        kwargs = {"partition_spec": spec} if spec is not None else {}
        return catalog.create_table_if_not_exists(
            identifier, schema=schema, properties=TABLE_PROPERTIES, **kwargs
        )
    missing = {k: v for k, v in TABLE_PROPERTIES.items() if table.properties.get(k) != v}
    if missing:  # a table created before the property was set: once
        with table.transaction() as tx:
            tx.set_properties(missing)
    added = [f for f in schema.fields if f.name not in top_level_columns(table.schema())]
    if added:  # a table created before the column existed (all such columns are optional): once
        # CommitFailedException: another process added them meanwhile
        with contextlib.suppress(CommitFailedException), table.update_schema() as update:
            for column in added:
                update.add_column(column.name, column.field_type, column.doc)
        table = catalog.load_table(identifier)
    return table


TABLES = {
    "raw": RAW_TABLE,
    "standardized": STANDARDIZED_TABLE,
    "curated": CURATED_TABLE,
    "daily_totals": DAILY_TOTALS_TABLE,
}


class TablesNotProvisionedError(RuntimeError):
    """A table of the pipeline does not exist: ``wap-pipeline provision`` creates them."""


def create_tables(catalog: Catalog) -> dict[str, Table]:
    """Create the namespaces and tables when missing, and bring an older table's properties and
    columns up to date; return them by layer. Only provisioning runs this DDL."""
    return {
        "raw": _ensure(catalog, RAW_TABLE, RAW_SCHEMA, _by_batch(RAW_SCHEMA)),
        "standardized": _ensure(
            catalog, STANDARDIZED_TABLE, STANDARDIZED_SCHEMA, _by_batch(STANDARDIZED_SCHEMA)
        ),
        "curated": _ensure(catalog, CURATED_TABLE, CURATED_SCHEMA, _by_event_day(CURATED_SCHEMA)),
        "daily_totals": _ensure(catalog, DAILY_TOTALS_TABLE, DAILY_TOTALS_SCHEMA, None),
    }


def load_tables(catalog: Catalog) -> dict[str, Table]:
    """The pipeline's tables by layer, as provisioned; a missing one is a clear error, never created here."""
    tables = {}
    for layer, identifier in TABLES.items():
        try:
            tables[layer] = catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError) as error:
            raise TablesNotProvisionedError(
                f"Iceberg table {'.'.join(identifier)} does not exist in catalog {catalog.name!r}: "
                "run `wap-pipeline provision` (it creates the tables, and upgrades older ones)"
            ) from error
    return tables


def payload_fields(table_schema: Schema) -> dict[str, object]:
    """The producer-event fields a standardized table accepts, by name -> Iceberg type.

    Read from the table itself, so a schema evolved by an operator is honoured without a code change.
    """
    return {f.name: f.field_type for f in table_schema.fields if f.name not in STANDARDIZED_SYSTEM_COLUMNS}


def top_level_columns(schema: Schema) -> list[str]:
    """Top-level column names (``Schema.column_names`` also lists nested paths like ``x.element``)."""
    return [f.name for f in schema.fields]
