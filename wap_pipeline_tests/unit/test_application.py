"""The pipeline's steps without Dagster: publish a standardized batch, merge it into curated and
recompute its days' totals, on a real (SQLite) catalog with the arrow engine, each port a plain
function, as the assets wire them."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from wap_pipeline.application.curated import (
    AlreadyMerged,
    CuratePorts,
    Merged,
    NotInStandardizedError,
    account_rows,
    curated_lag,
    merge_batch,
)
from wap_pipeline.application.daily_totals import (
    AlreadyRecomputed,
    NotInCuratedError,
    Recomputed,
    TotalsPorts,
    recompute_days,
)
from wap_pipeline.application.raw import AlreadyLoaded, Loaded, LoadPorts, load_batch
from wap_pipeline.application.standardized import (
    AlreadyPublished,
    Audited,
    NotInRawError,
    Published,
    StandardizePorts,
    publish_batch,
)
from wap_pipeline.engines.arrow import ArrowEngine
from wap_pipeline.events import make_events
from wap_pipeline.iceberg import wap
from wap_pipeline.iceberg.schemas import create_tables
from wap_pipeline.ingest.landing import LandingObject, Manifest
from wap_pipeline.rules.envelope import landing_line, to_landing_record

LANDED = datetime(2026, 11, 29, 12, tzinfo=UTC)  # every time below derives from it: no wall clock


def landing_file(batch_id: str, events: list[dict], part: int = 0) -> tuple[LandingObject, bytes]:
    """One landing file of ``events`` as Firehose lands them (landing envelopes, one per line)."""
    data = b"".join(
        landing_line(
            to_landing_record(
                {
                    "MessageId": f"{batch_id}-{part}-{number}",
                    "Body": orjson.dumps(event).decode(),
                    "Attributes": {"SentTimestamp": str(int(LANDED.timestamp() * 1000))},
                }
            )
        )
        for number, event in enumerate(events)
    )
    key = f"landing/2026/11/29/12/{batch_id}-{part}"
    return LandingObject(key, len(data), LANDED + timedelta(seconds=part)), data


def load_ports(raw, files: dict[str, list[tuple[LandingObject, bytes]]]) -> LoadPorts:
    """The raw step's ports over landing files held in memory, by batch id."""
    return LoadPorts(
        raw=raw,
        read_manifest=lambda batch_id: Manifest(batch_id, tuple(landed for landed, _ in files[batch_id])),
        read_files=lambda manifest: files[manifest.batch_id],
        batch_ids_after=lambda last: [],
        now=lambda: LANDED + timedelta(minutes=1),
    )


def land(raw, batch_id: str, events: list[dict]) -> None:
    """Load ``events`` into raw the way the raw step does, from one landing file."""
    load_batch(load_ports(raw, {batch_id: [landing_file(batch_id, events)]}), batch_id)


@pytest.fixture
def tables(catalog):
    return create_tables(catalog)


def standardize_ports(tables, quarantined: frozenset[str] = frozenset()) -> StandardizePorts:
    return StandardizePorts(
        engine=ArrowEngine(),
        raw=tables["raw"],
        standardized=tables["standardized"],
        read_quarantine=lambda: quarantined,
        grants_of=lambda tokens: {},
        batch_ids_after=lambda last: [],
        abandoned_branch_retention_ms=0,
        now=lambda: LANDED + timedelta(minutes=5),
    )


def test_a_batch_is_loaded_into_raw_in_one_commit_once(tables):
    events = make_events(30, seed=2, now=LANDED)
    files = {"b0": [landing_file("b0", events[:10], 0), landing_file("b0", events[10:], 1)]}

    loaded = load_batch(load_ports(tables["raw"], files), "b0")
    assert isinstance(loaded, Loaded) and loaded.rows == 30
    raw = tables["raw"].refresh()
    [commit] = wap.batch_snapshots(raw, "b0")
    summary = commit.summary.additional_properties
    newest, _ = files["b0"][1]
    assert summary[wap.BOOKMARK_PROPERTY] == newest.key and wap.is_published(raw, "b0")
    assert summary[wap.LANDED_AT_PROPERTY] == newest.last_modified.isoformat(), "when its newest file landed"
    rows = raw.scan().to_arrow()
    assert sorted(rows["message_id"].to_pylist()) == sorted(
        [f"b0-0-{n}" for n in range(10)] + [f"b0-1-{n}" for n in range(20)]
    )
    assert set(rows["batch_id"].to_pylist()) == {"b0"}
    assert isinstance(load_batch(load_ports(raw, files), "b0"), AlreadyLoaded)
    assert len(wap.batch_snapshots(raw.refresh(), "b0")) == 1


def test_a_batch_is_audited_before_it_is_published_then_merged_once(tables):
    events = make_events(12, seed=3, now=LANDED)
    land(tables["raw"], "b1", events)
    masked = frozenset({events[0]["event_id"]})

    outcomes = list(publish_batch(standardize_ports(tables, masked), "b1"))
    assert [type(o) for o in outcomes] == [Audited, Published]
    audited, published = outcomes
    assert audited.passed and audited.branch == "audit_batch_b1" and audited.reference == LANDED
    assert (published.written.rows, published.written.skipped) == (11, 1)
    assert wap.is_published(tables["standardized"], "b1")
    assert [type(o) for o in publish_batch(standardize_ports(tables), "b1")] == [AlreadyPublished]

    ports = CuratePorts(
        engine=ArrowEngine(),
        standardized=tables["standardized"],
        curated=tables["curated"],
        batch_ids_after=lambda last: [],
        dedup_window_days=7,
        compact_min_files=8,
        now=lambda: LANDED + timedelta(minutes=6),
    )
    merged = merge_batch(ports, "b1")
    assert isinstance(merged, Merged) and merged.summary.inserted == 11
    assert tables["curated"].refresh().scan().to_arrow().num_rows == 11
    assert isinstance(merge_batch(ports, "b1"), AlreadyMerged)

    totals_ports = TotalsPorts(ArrowEngine(), tables["curated"], tables["daily_totals"], lambda last: [])
    recomputed = recompute_days(totals_ports, "b1")
    assert isinstance(recomputed, Recomputed) and recomputed.days == merged.summary.touched_days
    written = tables["daily_totals"].refresh().scan().to_arrow()
    assert written.num_rows == recomputed.totals.num_rows and sum(written["events"].to_pylist()) == 11
    assert sum(written["amount_minor"].to_pylist()) == sum(e["amount_minor"] for e in events[1:])
    assert isinstance(recompute_days(totals_ports, "b1"), AlreadyRecomputed)


def test_a_failed_audit_abandons_its_branch_and_publishes_nothing(tables):
    events = make_events(5, seed=4, now=LANDED)
    events[2]["event_timestamp"] = (LANDED + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    land(tables["raw"], "b2", events)

    outcomes = list(publish_batch(standardize_ports(tables), "b2"))
    assert [type(o) for o in outcomes] == [Audited], "no Published after a failed audit"
    (audited,) = outcomes
    assert not audited.passed and audited.audit.reasons == {"event_timestamp_in_future": 1}
    standardized = tables["standardized"].refresh()
    assert not wap.is_published(standardized, "b2") and standardized.scan().to_arrow().num_rows == 0
    assert "audit_batch_b2" in standardized.metadata.refs, "kept for inspection"
    assert [type(o) for o in publish_batch(standardize_ports(tables), "b2")] == [Audited]
    assert "audit_batch_b2_retry_1" in tables["standardized"].refresh().metadata.refs, (
        "a retry is a new branch"
    )


def test_steps_refuse_a_batch_their_upstream_does_not_hold(tables):
    with pytest.raises(NotInRawError, match="materialize raw/events"):
        list(publish_batch(standardize_ports(tables), "b9"))
    ports = CuratePorts(
        ArrowEngine(), tables["standardized"], tables["curated"], lambda last: [], 7, 8, lambda: LANDED
    )
    with pytest.raises(NotInStandardizedError):
        merge_batch(ports, "b9")
    with pytest.raises(NotInCuratedError):
        recompute_days(
            TotalsPorts(ArrowEngine(), tables["curated"], tables["daily_totals"], lambda last: []), "b9"
        )
    assert tables["curated"].refresh().current_snapshot() is None


def test_a_merged_batch_accounts_for_every_row_and_a_pending_one_shows_its_lag(tables):
    land(tables["raw"], "b3", make_events(8, seed=5, now=LANDED))
    list(publish_batch(standardize_ports(tables), "b3"))
    standardized = tables["standardized"].refresh()
    # Iceberg stamps commits with the clock: the lag is measured from the commit, never a literal date.
    published_s = wap.published_snapshot(standardized, "b3").timestamp_ms / 1000
    later = datetime.fromtimestamp(published_s + 90, UTC)
    lag = curated_lag(standardized, tables["curated"], lambda last: [], later)
    assert lag.pending == ["b3"] and lag.oldest_lag_s == pytest.approx(90)
    not_merged = account_rows(standardized, tables["curated"], "b3")
    assert not not_merged.holds and not_merged.why() == "batch missing from standardized or curated"

    ports = CuratePorts(ArrowEngine(), standardized, tables["curated"], lambda last: [], 7, 8, lambda: later)
    merge_batch(ports, "b3")
    curated = tables["curated"].refresh()
    account = account_rows(standardized, curated, "b3")
    assert account.holds and (account.standardized_rows, account.inserted, account.net_new_rows) == (8, 8, 8)
    assert curated_lag(standardized, curated, lambda last: [], later).pending == []
    lost_one = replace(account, standardized_rows=9)  # what a merge that dropped a row would record
    assert not lost_one.holds and lost_one.why().startswith("standardized 9 vs inserted 8")
