"""The quarantine: record ids (``event_id``) masked from processing unless the copy is a replay.

Each run reads the whole table once (a paginated scan) and filters in memory, which stays cheap for
hundreds of thousands of ids; there is never one call per record. The standardized step starts that
scan in the background (:class:`QuarantineRead`) before it reads and parses the batch, so they overlap.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from wap_pipeline import aws
from wap_pipeline.resources.breaker import operator_name
from wap_pipeline.resources.replay_grants import ReplayGrants
from wap_pipeline.resources.settings import SettingsResource


@dataclass(frozen=True)
class QuarantineEntry:
    record_id: str
    reason: str
    added_by: str
    added_at: str


class Quarantine:
    def __init__(self, dynamodb, table: str):
        self._dynamodb = dynamodb
        self._table = table

    def add(self, record_id: str, reason: str, operator: str | None = None) -> QuarantineEntry:
        if not record_id.strip() or not reason.strip():
            raise ValueError("quarantine needs a record id and a reason")
        entry = QuarantineEntry(
            record_id, reason, operator or operator_name(), datetime.now(UTC).isoformat(timespec="seconds")
        )
        self._dynamodb.put_item(
            TableName=self._table,
            Item=aws.to_item(asdict(entry)),
        )
        return entry

    def remove(self, record_id: str) -> bool:
        response = self._dynamodb.delete_item(
            TableName=self._table, Key=aws.to_item({"record_id": record_id}), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    def entries(self) -> list[QuarantineEntry]:
        entries = []
        for page in self._dynamodb.get_paginator("scan").paginate(TableName=self._table):
            for item in page.get("Items", []):
                values = aws.from_item(item)
                entries.append(
                    QuarantineEntry(
                        values["record_id"],
                        values.get("reason", ""),
                        values.get("added_by", ""),
                        values.get("added_at", ""),
                    )
                )
        return entries

    def ids(self) -> frozenset[str]:
        """Every quarantined id, in one paginated scan that reads only the key."""
        ids: set[str] = set()
        paginator = self._dynamodb.get_paginator("scan")
        for page in paginator.paginate(TableName=self._table, ProjectionExpression="record_id"):
            ids.update(aws.from_item(item)["record_id"] for item in page.get("Items", []))
        return frozenset(ids)

    def count(self) -> int:
        total = 0
        for page in self._dynamodb.get_paginator("scan").paginate(TableName=self._table, Select="COUNT"):
            total += page["Count"]
        return total


class QuarantineRead(Collection[str]):
    """Every quarantined id, read in a background thread from the moment this is created.

    The scan mostly waits on DynamoDB (the network, or the local server's own process), so a step
    that starts it before reading and parsing its batch pays only what is left of it when the ids
    are first needed. It is a collection of the ids: the first use waits for the scan (and
    re-raises its error), so the quarantine filter can be handed this before the scan is done.
    """

    def __init__(self, quarantine: Quarantine):
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quarantine-read")
        self._ids = pool.submit(quarantine.ids)
        pool.shutdown(wait=False)

    def ids(self) -> frozenset[str]:
        return self._ids.result()

    def __contains__(self, record_id: object) -> bool:
        return record_id in self.ids()

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self.ids())


class QuarantineResource(ConfigurableResource):
    config: SettingsResource

    _dynamodb: Any = PrivateAttr(default=None)

    def _client(self):
        if self._dynamodb is None:
            self._dynamodb = aws.client("dynamodb", self.config.settings())
        return self._dynamodb

    def quarantine(self) -> Quarantine:
        return Quarantine(self._client(), self.config.settings().quarantine_table)

    def replay_grants(self) -> ReplayGrants:
        """data-patcher's replay grants: which replays may bypass the quarantine."""
        return ReplayGrants(self._client(), self.config.settings().replay_grants_table)

    def read_in_background(self) -> QuarantineRead:
        """Start reading every quarantined id now; the result is a collection of them."""
        return QuarantineRead(self.quarantine())
