"""One writer per table: a lease in DynamoDB, and fencing of every commit with its token.

Iceberg's compare-and-swap only protects a commit whose base is the head its writer planned on; a
writer that refreshes between planning and committing (creating a branch from main's new head, a
fast-forward, a Spark commit) can still commit a plan that another writer made stale. The lease keeps
a second writer -- a daemon run, a headless run, a CLI verb, a Spark job -- from planning while one
holds the table.

The lease is one item per table, taken with a conditional write (the item is free, expired, or held
by a dead process of this host) that increments ``token``. Every commit through a handle taken with
:func:`writing` is fenced first (:meth:`TableWriter.fence`): the lease is renewed on condition that
its token is still the current one, and the table's ref heads must not carry a higher token (a newer
holder already committed) -- then the token is recorded in the commit's summary (``wap.writer-token``).
A stale holder -- paused past its expiry, its lease taken over -- is refused, and its step re-plans.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.update import AddSnapshotUpdate, TableRequirement, TableUpdate

from wap_pipeline import aws
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import load_tables
from wap_pipeline.settings import Settings

WRITER_TOKEN_PROPERTY = "wap.writer-token"
_CONDITION_FAILED = "ConditionalCheckFailedException"
_POLL_S = 0.25


class LeaseBusyError(RuntimeError):
    """Another live writer holds the table's lease."""


class LeaseLostError(CommitFailedException):
    """This writer's lease was taken over (it expired) or a newer holder committed: the commit is
    refused before it reaches the catalog (a failed commit, like a lost compare-and-swap)."""


@dataclass(frozen=True)
class Lease:
    resource: str
    holder: str
    token: int
    expires_at_ms: int


def holder_id(purpose: str) -> str:
    """``<host>:<pid>:<purpose>``: who holds a lease, and how a dead holder of this host is recognised."""
    return f"{socket.gethostname()}:{os.getpid()}:{purpose}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dead_here(holder: str) -> bool:
    """The holder is a process of this host that no longer exists (killed, out of memory)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_NAMES = {"#res": "resource", "#holder": "holder", "#token": "token", "#expires": "expires_at_ms"}


class Leases:
    """The lease items in one DynamoDB table (key ``resource``), changed only by conditional writes."""

    def __init__(self, dynamodb, table: str):
        self._dynamodb = dynamodb
        self._table = table

    def _update(self, resource: str, expression: str, condition: str, values: dict) -> Lease | None:
        """One conditional UpdateItem: the lease it leaves, or None when the condition did not hold."""
        names = {name: attribute for name, attribute in _NAMES.items() if name in expression + condition}
        try:
            response = self._dynamodb.update_item(
                TableName=self._table,
                Key=aws.to_item({"resource": resource}),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=aws.to_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == _CONDITION_FAILED:
                return None
            raise
        item = aws.from_item(response["Attributes"])
        return Lease(item["resource"], item["holder"], item["token"], item["expires_at_ms"])

    def current(self, resource: str) -> Lease | None:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=aws.to_item({"resource": resource}), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        values = aws.from_item(item)
        return Lease(resource, values["holder"], values["token"], values["expires_at_ms"])

    def acquire(self, resource: str, holder: str, ttl_s: float) -> Lease:
        """Take the lease if it is free, expired, already ours, or held by a dead process of this host;
        every acquisition gets a new, higher token. Raises :class:`LeaseBusyError` otherwise."""
        now = _now_ms()
        take = "SET #holder = :h, #expires = :e ADD #token :one"
        values = {":h": holder, ":e": now + int(ttl_s * 1000), ":one": 1}
        lease = self._update(
            resource,
            take,
            "attribute_not_exists(#res) OR #expires <= :now OR #holder = :h",
            {**values, ":now": now},
        )
        if lease is not None:
            return lease
        current = self.current(resource)
        if current is not None and _dead_here(current.holder):
            lease = self._update(resource, take, "#token = :t", {**values, ":t": current.token})
            if lease is not None:
                return lease
        held_by = f"{current.holder} (token {current.token})" if current else "another writer"
        raise LeaseBusyError(f"the writer lease of {resource} is held by {held_by}")

    def acquire_waiting(self, resource: str, holder: str, ttl_s: float, wait_s: float) -> Lease:
        """:meth:`acquire`, retried until the lease is free or ``wait_s`` has passed."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.acquire(resource, holder, ttl_s)
            except LeaseBusyError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(_POLL_S)

    def renew(self, lease: Lease, ttl_s: float) -> Lease:
        """Extend the lease, on condition that its token is still the current one."""
        renewed = self._update(
            lease.resource,
            "SET #expires = :e",
            "#token = :t AND #holder = :h",
            {":e": _now_ms() + int(ttl_s * 1000), ":t": lease.token, ":h": lease.holder},
        )
        if renewed is None:
            raise LeaseLostError(
                f"the writer lease of {lease.resource} (token {lease.token}, {lease.holder}) was taken "
                "over: another writer may have committed since this one planned"
            )
        return renewed

    def advance(self, lease: Lease, above: int) -> Lease:
        """Raise a held lease's token above ``above``: a table whose commits carry higher tokens than
        the lease item (the lease table was recreated) would otherwise refuse every commit."""
        advanced = self._update(
            lease.resource,
            "SET #token = :n",
            "#token = :t AND #holder = :h",
            {":n": above + 1, ":t": lease.token, ":h": lease.holder},
        )
        if advanced is None:
            raise LeaseLostError(f"the writer lease of {lease.resource} was taken over")
        return advanced

    def release(self, lease: Lease) -> None:
        """Free the lease now if it is still ours; the token stays, so the next holder's is higher."""
        self._update(lease.resource, "SET #expires = :zero", "#token = :t", {":zero": 0, ":t": lease.token})


def highest_token(table: Table) -> int:
    """The highest writer token on the heads of the table's refs (as this handle's metadata has them)."""
    metadata = table.metadata
    tokens = [0]
    for ref in metadata.refs.values():
        snapshot = metadata.snapshot_by_id(ref.snapshot_id)
        token = snapshot.summary.get(WRITER_TOKEN_PROPERTY) if snapshot and snapshot.summary else None
        if token:
            tokens.append(int(token))
    return max(tokens)


def resource_name(catalog_name: str, table: Table) -> str:
    return f"{catalog_name}/{'.'.join(table.name())}"


class TableWriter:
    """This process's lease on one table, renewed in the background, and the fence of its commits."""

    def __init__(self, leases: Leases, lease: Lease, ttl_s: float):
        self._leases = leases
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._lost: LeaseLostError | None = None
        self._stopped = threading.Event()
        self.lease = lease
        self._heartbeat = threading.Thread(target=self._renew_until_stopped, daemon=True, name="lease")
        self._heartbeat.start()

    def _renew(self) -> Lease:
        with self._lock:
            if self._lost is not None:
                raise self._lost
            try:
                self.lease = self._leases.renew(self.lease, self._ttl_s)
            except LeaseLostError as error:
                self._lost = error
                raise
            return self.lease

    def _renew_until_stopped(self) -> None:
        """Keep a long plan (standardizing a big batch) from outliving the lease; a crashed process
        stops renewing, and its lease expires after ``ttl_s``."""
        while not self._stopped.wait(self._ttl_s / 3):
            try:
                self._renew()
            except LeaseLostError:
                return
            except Exception:  # noqa: BLE001 - a transient error: the next beat, or the fence, retries
                continue

    def advance_past(self, table: Table) -> None:
        """Make sure this lease's token is above every token the table's heads carry."""
        newest = highest_token(table)
        with self._lock:
            if newest >= self.lease.token:
                self.lease = self._leases.advance(self.lease, newest)

    def fence(self, table: Table) -> dict[str, str]:
        """Refuse to commit unless this lease is still current and no newer holder has committed to
        the table; the summary properties that record the token."""
        lease = self._renew()
        newest = highest_token(table.catalog.load_table(table.name()))
        if newest > lease.token:
            raise LeaseLostError(
                f"{'.'.join(table.name())} has a commit by writer token {newest}, newer than this "
                f"writer's {lease.token}: its lease was taken over; re-plan"
            )
        return {WRITER_TOKEN_PROPERTY: str(lease.token)}

    def release(self) -> None:
        """Stop renewing and free the lease; if freeing fails, it simply expires after ``ttl_s``."""
        self._stopped.set()
        self._heartbeat.join()
        with self._lock, contextlib.suppress(ClientError, BotoCoreError):
            if self._lost is None:
                self._leases.release(self.lease)


_WRITER = "_wap_writer"


def _fence_commits(table: Table, writer: TableWriter) -> None:
    """Fence every commit made through this handle -- transactions, branch and ref changes, schema
    updates, maintenance all reach the catalog through ``Table._do_commit`` -- and record the token
    in the summary of each snapshot it adds. One place, so that no commit point can be missed."""
    commit = table._do_commit

    def fenced(updates: tuple[TableUpdate, ...], requirements: tuple[TableRequirement, ...]) -> None:
        properties = writer.fence(table)
        for update in updates:
            if isinstance(update, AddSnapshotUpdate) and update.snapshot.summary is not None:
                for key, value in properties.items():
                    update.snapshot.summary[key] = value
        commit(updates, requirements)

    table._do_commit = fenced
    setattr(table, _WRITER, writer)


def fence(table: Table) -> dict[str, str]:
    """Fence a commit the catalog does not see through the handle (a Spark write or procedure): the
    token's summary properties, or nothing when the handle was not taken with :func:`writing`."""
    writer = getattr(table, _WRITER, None)
    return writer.fence(table) if writer is not None else {}


@contextmanager
def _held(
    table: Table, leases: Leases, catalog_name: str, holder: str, ttl_s: float, wait_s: float
) -> Iterator[None]:
    lease = leases.acquire_waiting(resource_name(catalog_name, table), holder, ttl_s, wait_s)
    writer = TableWriter(leases, lease, ttl_s)
    try:
        writer.advance_past(table.refresh())
        _fence_commits(table, writer)
        yield
    finally:
        table.__dict__.pop("_do_commit", None)
        table.__dict__.pop(_WRITER, None)
        writer.release()


@contextmanager
def writing(
    tables: Mapping[str, Table],
    layers: Sequence[str],
    leases: Leases,
    catalog_name: str,
    holder: str,
    ttl_s: float,
    wait_s: float,
) -> Iterator[Mapping[str, Table]]:
    """Hold the writer lease of each of ``layers`` (waiting up to ``wait_s`` for each) and fence every
    commit made through their handles in ``tables``; released on exit. Plan inside: what the step
    reads to decide ("already done?", the keys to merge) is then read under the lease."""
    with ExitStack() as stack:
        for layer in sorted(layers):  # one order everywhere: two multi-table writers cannot deadlock
            stack.enter_context(_held(tables[layer], leases, catalog_name, holder, ttl_s, wait_s))
        yield tables


@contextmanager
def writing_to(
    settings: Settings, purpose: str, *layers: str, catalog: Catalog | None = None
) -> Iterator[Mapping[str, Table]]:
    """Every table by layer (:func:`load_tables`, of ``catalog`` or the settings' catalog), holding the
    writer lease of ``layers``, with the lease table, expiry and wait of ``settings``; the holder is
    this process, doing ``purpose``."""
    leases = Leases(aws.client("dynamodb", settings), settings.writer_lease_table)
    tables = load_tables(catalog or load_wap_catalog(settings))
    with writing(
        tables,
        layers,
        leases,
        settings.catalog_name,
        holder_id(purpose),
        settings.writer_lease_ttl_s,
        settings.writer_lease_wait_s,
    ) as held:
        yield held
