"""The per-table writer lease on the local DynamoDB server: one holder at a time, a new higher token
per acquisition, takeover after expiry or of a dead holder, and every commit fenced by its token."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from wap_pipeline import aws
from wap_pipeline.iceberg import lease, wap
from wap_pipeline.iceberg.catalog import load_wap_catalog
from wap_pipeline.iceberg.schemas import RAW_TABLE
from wap_pipeline.settings import Settings
from wap_pipeline_tests.wap_cases import raw_batch

pytestmark = pytest.mark.integration


@pytest.fixture
def leases(stack) -> lease.Leases:
    return lease.Leases(aws.client("dynamodb", stack), stack.writer_lease_table)


def test_one_holder_at_a_time_and_every_acquisition_a_higher_token(leases):
    first = leases.acquire("t", "host:1:a", ttl_s=60)
    with pytest.raises(lease.LeaseBusyError, match="host:1:a"):
        leases.acquire("t", "host:2:b", ttl_s=60)
    again = leases.acquire("t", "host:1:a", ttl_s=60)  # already ours: re-taken, with a new token
    assert again.token > first.token
    with pytest.raises(lease.LeaseLostError):
        leases.renew(first, ttl_s=60)  # the older acquisition is stale
    leases.release(again)
    second = leases.acquire("t", "host:2:b", ttl_s=60)
    assert second.token > again.token
    with pytest.raises(lease.LeaseLostError):
        leases.renew(again, ttl_s=60)
    assert leases.renew(second, ttl_s=60).token == second.token
    assert leases.acquire("other-table", "host:1:a", ttl_s=60).token == 1, "one lease per table"


def test_an_expired_lease_is_taken_over_and_its_holder_refused(leases):
    stale = leases.acquire("t", "host:1:a", ttl_s=0.3)
    with pytest.raises(lease.LeaseBusyError):
        leases.acquire("t", "host:2:b", ttl_s=60)
    time.sleep(0.5)
    newer = leases.acquire("t", "host:2:b", ttl_s=60)
    assert newer.token > stale.token
    with pytest.raises(lease.LeaseLostError, match="taken over"):
        leases.renew(stale, ttl_s=60)
    leases.release(stale)  # a stale release frees nothing
    with pytest.raises(lease.LeaseBusyError):
        leases.acquire("t", "host:3:c", ttl_s=60)


def test_a_dead_holder_of_this_host_is_taken_over_at_once(leases):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = lease.holder_id("run x").replace(f":{os.getpid()}:", f":{dead.stdout.strip()}:")
    crashed = leases.acquire("t", holder, ttl_s=3600)
    taken = leases.acquire("t", lease.holder_id("redrive"), ttl_s=60)
    assert taken.token > crashed.token
    alive = leases.acquire("u", lease.holder_id("this process"), ttl_s=3600)
    with pytest.raises(lease.LeaseBusyError):
        leases.acquire("u", "elsewhere:1:other", ttl_s=60)
    assert leases.current("u") == alive


def hold(stack, leases, purpose: str, ttl_s: float = 60, wait_s: float = 0):
    tables = {"raw": load_wap_catalog(stack).load_table(RAW_TABLE)}
    return lease.writing(tables, ["raw"], leases, stack.catalog_name, lease.holder_id(purpose), ttl_s, wait_s)


def append(table, batch_id: str) -> None:
    table.append(raw_batch(batch_id, 1), snapshot_properties={wap.BATCH_ID_PROPERTY: batch_id})


# A holder in its own process: takes the raw table's lease, commits b1 and creates a branch, says so,
# then -- when told -- tries to commit b4 and to remove the branch, and prints how each attempt ended.
_HOLDER = """
import sys, time
from pathlib import Path
from wap_pipeline.iceberg import lease, wap
from wap_pipeline.settings import Settings
from wap_pipeline_tests.wap_cases import raw_batch

go = Path(sys.argv[1])
with lease.writing_to(Settings.from_env(), "stale holder", "raw") as tables:
    raw = tables["raw"]
    raw.append(raw_batch("b1", 1), snapshot_properties={wap.BATCH_ID_PROPERTY: "b1"})
    wap.create_branch_from_main(raw, "audit_batch_b2")
    Path(f"{go}.ready").touch()
    while not go.exists():
        time.sleep(0.05)
    for attempt in (
        lambda: raw.append(raw_batch("b4", 1), snapshot_properties={wap.BATCH_ID_PROPERTY: "b4"}),
        lambda: raw.manage_snapshots().remove_branch("audit_batch_b2").commit(),
    ):
        try:
            attempt()
            print("committed")
        except lease.LeaseLostError as error:
            print("refused:", error)
"""


def test_every_commit_records_the_token_and_a_stale_holder_is_refused(stack, leases, tmp_path, monkeypatch):
    """The holder stalls (SIGSTOP: its heartbeat stops with it) past its lease's expiry; another
    writer takes the table over and commits; the holder wakes up and is refused."""
    monkeypatch.setenv("WAP_WRITER_LEASE_TTL_S", "1")
    go = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not go.with_name("go.ready").exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()
            time.sleep(0.05)
        raw = load_wap_catalog(stack).load_table(RAW_TABLE)
        first = int(raw.current_snapshot().summary[lease.WRITER_TOKEN_PROPERTY])
        holder.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        with hold(stack, leases, "second") as tables:
            append(tables["raw"], "b3")
            assert int(tables["raw"].current_snapshot().summary[lease.WRITER_TOKEN_PROPERTY]) > first
        holder.send_signal(signal.SIGCONT)
        go.touch()
        output, errors = holder.communicate(timeout=120)
    finally:
        holder.kill()
    assert holder.returncode == 0, errors[-3000:]
    assert [line.split(":")[0] for line in output.splitlines()] == ["refused", "refused"], output
    final = load_wap_catalog(stack).load_table(RAW_TABLE)
    assert wap.published_batches(final) == ["b1", "b3"]
    assert "audit_batch_b2" in final.metadata.refs
    assert all(lease.WRITER_TOKEN_PROPERTY in s.summary for s in final.metadata.snapshots)


def test_a_commit_under_a_lower_token_than_the_table_has_is_refused(stack, leases):
    from wap_pipeline.iceberg.schemas import load_tables

    raw = load_tables(load_wap_catalog(stack))["raw"]
    raw.append(
        raw_batch("b0", 1),
        snapshot_properties={wap.BATCH_ID_PROPERTY: "b0", lease.WRITER_TOKEN_PROPERTY: "7"},
    )
    with hold(stack, leases, "writer") as tables:  # the lease item is new: its token is advanced past 7
        append(tables["raw"], "b1")
        assert tables["raw"].current_snapshot().summary[lease.WRITER_TOKEN_PROPERTY] == "8"
        # A writer that ignores leases commits a higher token: this holder must not commit over it.
        other = load_wap_catalog(stack).load_table(RAW_TABLE)
        other.append(
            raw_batch("b2", 1),
            snapshot_properties={wap.BATCH_ID_PROPERTY: "b2", lease.WRITER_TOKEN_PROPERTY: "9"},
        )
        with pytest.raises(lease.LeaseLostError, match="newer than"):
            tables["raw"].refresh()
            append(tables["raw"], "b3")
    assert wap.published_batches(load_wap_catalog(stack).load_table(RAW_TABLE)) == ["b0", "b1", "b2"]


def test_a_busy_table_is_waited_for(stack, leases):
    first = hold(stack, leases, "first")
    first.__enter__()
    with pytest.raises(lease.LeaseBusyError), hold(stack, leases, "second", wait_s=0.3):
        pass
    threading.Timer(1.0, first.__exit__, (None, None, None)).start()
    started = time.monotonic()
    with hold(stack, leases, "second", wait_s=30) as tables:
        assert time.monotonic() - started >= 0.8, "taken only once the first holder released it"
        append(tables["raw"], "b1")


def test_the_maintenance_job_holds_the_lease_of_every_table(stack, leases, monkeypatch):
    """The daily maintenance commits to every table like a step: under their leases, released after."""
    monkeypatch.setenv("WAP_WRITER_LEASE_WAIT_S", "0.5")
    monkeypatch.setenv("WAP_ABANDONED_BRANCH_RETENTION_HOURS", "0")
    from dagster import DagsterInstance

    from wap_pipeline.definitions import resources_for
    from wap_pipeline.iceberg.schemas import load_tables
    from wap_pipeline.jobs import maintenance_job

    standardized = load_tables(load_wap_catalog(stack))["standardized"]
    wap.create_branch_from_main(standardized, "audit_batch_b1")
    wap.abandon_branch(standardized, "audit_batch_b1", "audit failed", retention_ms=0)
    resource = lease.resource_name(stack.catalog_name, standardized)
    busy = leases.acquire(resource, "elsewhere:1:another run", ttl_s=60)
    with DagsterInstance.ephemeral() as instance:
        refused = maintenance_job.execute_in_process(
            instance=instance, resources=resources_for(Settings.from_env()), raise_on_error=False
        )
        assert not refused.success, "a busy table is not written"
        assert "audit_batch_b1" in standardized.refresh().metadata.refs
        leases.release(busy)
        assert maintenance_job.execute_in_process(
            instance=instance, resources=resources_for(Settings.from_env())
        ).success
    assert "audit_batch_b1" not in standardized.refresh().metadata.refs
    held = leases.current(resource)
    assert held.token == busy.token + 1 and held.expires_at_ms == 0, "taken once, then released"
