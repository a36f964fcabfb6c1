"""The invariants every chaos schedule must leave behind, checked against the stores themselves.

1. every sent message is in exactly one place: curated (once per idempotency_key), the quarantine, or
   the DLQ -- and nothing is left in the ingest queue;
2. no idempotency_key twice in curated;
3. no record both published and quarantined (a replay superseding its quarantined original is the
   designed path, not a violation);
4. every batch (manifest) is registered and in every layer's ledger; main's bookmark is that of the last
   published batch;
5. no published batch lacks a passed audit: a passed `audit` check evaluation for the very branch
   main was fast-forwarded to (where the commit and the instance's check results still exist);
6. branches that were not published (abandoned, or unfinished after a crash) are never ancestors of main;
7. precedence: a correction (a later event_timestamp for the same idempotency_key) is the copy curated
   keeps, whichever batch each copy landed in;
8. curated/daily_totals equals a recomputation from curated;
plus `wap-pipeline status --json`'s own identity (landed = quarantined + published = inserted +
superseded + skipped per batch; sent = curated + quarantine + DLQ overall; and per message id from the
forwarder's receipts, forwarded = landed = published + masked).
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table.snapshots import ancestors_of

from wap_pipeline import aws
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest import sqs as sqs_calls
from wap_pipeline.ingest.landing import batch_ids_after
from wap_pipeline.provision import queue_url
from wap_pipeline.rules.curated import EVENT_TIME, daily_totals
from wap_pipeline.settings import Settings
from wap_pipeline_tests.chaos.plan import Plan


def _ids(evaluation_metadata, key: str):
    value = evaluation_metadata.get(key)
    return getattr(value, "value", value)


def check_invariants(
    settings: Settings, plan: Plan, status: dict | None, published_before_loss: set[str] = frozenset()
) -> list[str]:
    from dagster import DagsterInstance

    from wap_pipeline_tests.integration.helpers import check_evaluations, dlq_messages, quarantine, tables

    problems: list[str] = []
    messages = plan.all_messages()
    t = tables(settings)
    standardized, curated = t["standardized"], t["curated"]

    # --- where each message must be ---------------------------------------------------------------
    expected_curated: set[str] = set()
    expected_quarantined: set[str] = set()
    replayed: set[str] = set()
    forbidden_in_curated: set[str] = set()
    for m in messages:
        if m.kind in ("good", "duplicate", "correction", "schema:new_field"):
            expected_curated.add(m.event["idempotency_key"])
        elif m.kind.startswith(("cde:", "schema:wrong_type")):
            expected_quarantined.add(m.event["event_id"])
            if m.fixed is not None:
                expected_curated.add(m.fixed["idempotency_key"])
                replayed.add(m.fixed["event_id"])
            elif m.event.get("idempotency_key"):
                forbidden_in_curated.add(m.event["idempotency_key"])

    rows = curated.scan(
        selected_fields=("idempotency_key", "event_id", "is_replay", "amount_minor")
    ).to_arrow()
    counts = Counter(rows["idempotency_key"].to_pylist())
    kept = {r["idempotency_key"]: r for r in rows.to_pylist()}
    for m in messages:
        if m.kind == "correction":
            row = kept.get(m.event["idempotency_key"])
            if row is None or (row["event_id"], row["amount_minor"]) != (
                m.event["event_id"],
                m.event["amount_minor"],
            ):
                problems.append(f"curated kept {row} for {m.event['idempotency_key']}, not its correction")
    twice = {k: c for k, c in counts.items() if c > 1}
    if twice:
        problems.append(f"idempotency_key(s) more than once in curated: {dict(list(twice.items())[:5])}")
    missing = expected_curated - set(counts)
    if missing:
        problems.append(f"{len(missing)} expected key(s) missing from curated: {sorted(missing)[:5]}")
    unexpected = set(counts) - expected_curated
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) in curated: {sorted(unexpected)[:5]}")
    leaked = forbidden_in_curated & set(counts)
    if leaked:
        problems.append(f"quarantined record(s) without a replay reached curated: {sorted(leaked)[:5]}")

    quarantined = set(quarantine(settings).ids())
    if quarantined != expected_quarantined:
        problems.append(
            f"quarantine holds {sorted(quarantined)[:5]}, expected {sorted(expected_quarantined)[:5]}"
        )
    # No record both published and quarantined, unless it is the replay of a quarantined original.
    for name, table in (("standardized", standardized), ("curated", curated)):
        if table.current_snapshot() is None or not quarantined:
            continue
        scanned = table.scan(selected_fields=("event_id", "is_replay")).to_arrow()
        hit = scanned.filter(pc.is_in(scanned["event_id"], value_set=pa.array(sorted(quarantined))))
        originals = hit.filter(pc.invert(hit["is_replay"]))
        if originals.num_rows:
            problems.append(
                f"{originals.num_rows} quarantined original(s) published in {name}: "
                f"{originals['event_id'].to_pylist()[:5]}"
            )
        if name == "curated" and set(hit["event_id"].to_pylist()) != replayed & quarantined:
            problems.append(
                f"replays in curated {sorted(set(hit['event_id'].to_pylist()))} != {sorted(replayed)}"
            )

    dlq = Counter(m.body for m in dlq_messages(settings))
    expected_dlq = Counter(m.body for m in messages if m.kind == "malformed")
    if dlq != expected_dlq:
        extra, lacking = dlq - expected_dlq, expected_dlq - dlq
        problems.append(
            f"DLQ differs: {sum(extra.values())} unexpected ({[b[:60] for b in extra][:3]}), "
            f"{sum(lacking.values())} missing ({[b[:60] for b in lacking][:3]})"
        )
    sqs = aws.client("sqs", settings)
    visible, in_flight = sqs_calls.depth(sqs, queue_url(sqs, settings.queue_name))
    if visible or in_flight:
        problems.append(f"ingest queue not empty: {visible} visible, {in_flight} in flight")

    # --- batches, bookmark, audits, branches --------------------------------------------------------
    # Manifests are the truth about batches; the instance registers them all again after a loss.
    known = batch_ids_after(
        aws.client("s3", settings), settings.landing_bucket, settings.manifests_prefix, ""
    )
    with DagsterInstance.get() as instance:
        registered = sorted(instance.get_dynamic_partitions("landing_batches"))
    if registered != known:
        problems.append(f"registered batches {registered} != manifests {known}")
    for layer in ("raw", "standardized", "curated", "daily_totals"):
        ledger = wap.ledger(t[layer])
        absent = [b for b in known if b not in ledger]
        if absent:
            problems.append(f"batches {absent} are not in {layer}'s ledger")
    published = wap.published_batches(standardized)  # those whose commits maintenance left
    if len(published) != len(set(published)):
        problems.append(f"a batch published twice in standardized: {published}")
    mark = wap.bookmark(standardized)
    if published and (mark is None or mark["batch_id"] != published[-1]):
        problems.append(f"bookmark {mark} is not the last published batch {published[-1]}")
    raw_snapshot = wap.published_snapshot(t["raw"], mark["batch_id"]) if published and mark else None
    if raw_snapshot is not None and raw_snapshot.summary.get(wap.BOOKMARK_PROPERTY) != mark["bookmark"]:
        problems.append(
            f"bookmark {mark['bookmark']!r} differs from the batch's own "
            f"{raw_snapshot.summary.get(wap.BOOKMARK_PROPERTY)!r}"
        )

    passed_branches: dict[str, set[str]] = {}
    for evaluation in check_evaluations(["standardized", "events"], "audit"):
        if getattr(evaluation, "passed", False):
            branch = _ids(evaluation.metadata, "branch")
            if branch:
                passed_branches.setdefault(evaluation.partition, set()).add(branch)
    metadata = standardized.metadata
    head = standardized.current_snapshot()
    ancestry = {s.snapshot_id for s in ancestors_of(head, metadata)} if head else set()
    for batch in published:
        if batch in published_before_loss:
            continue  # its check results were lost with the instance
        snapshot = wap.published_snapshot(standardized, batch)
        # The commit names its branch (maintenance may have removed the branch itself since).
        recorded = snapshot.summary.get(wap.AUDIT_BRANCH_PROPERTY)
        branches = (
            [recorded]
            if recorded
            else [
                b
                for b in wap.branches_of_batch(standardized, batch)
                if metadata.refs[b].snapshot_id == snapshot.snapshot_id
            ]
        )
        if not branches:
            problems.append(f"batch {batch} was published from no audit branch")
        elif not set(branches) & passed_branches.get(batch, set()):
            problems.append(f"batch {batch} published from {branches} without a passed audit of that branch")
    for batch in known:
        for branch in wap.branches_of_batch(standardized, batch):
            branch_head = metadata.snapshot_by_id(metadata.refs[branch].snapshot_id)
            written = (
                branch_head.summary is not None and branch_head.summary.get(wap.BATCH_ID_PROPERTY) == batch
            )
            is_published = (
                batch in published
                and branch_head.snapshot_id == wap.published_snapshot(standardized, batch).snapshot_id
            )
            if written and not is_published and branch_head.snapshot_id in ancestry:
                problems.append(f"unpublished branch {branch} is an ancestor of main")
    for key in metadata.properties:
        if key.startswith(wap.ABANDONED_PROPERTY_PREFIX):
            branch = key[len(wap.ABANDONED_PROPERTY_PREFIX) :]
            if branch in metadata.refs and metadata.refs[branch].snapshot_id in ancestry:
                problems.append(f"abandoned branch {branch} is an ancestor of main")

    # --- daily totals ----------------------------------------------------------------------------------
    totals = t["daily_totals"].scan().to_arrow()
    recomputed = daily_totals(
        curated.scan(selected_fields=(EVENT_TIME, "event_type", "currency", "amount_minor")).to_arrow()
    )
    order = [("event_date", "ascending"), ("event_type", "ascending"), ("currency", "ascending")]
    if totals.sort_by(order).to_pylist() != recomputed.sort_by(order).to_pylist():
        problems.append(
            f"daily_totals ({totals.num_rows} rows) differs from a recomputation from curated "
            f"({recomputed.num_rows} rows)"
        )

    # --- the status report's own accounting ------------------------------------------------------------
    if status is None:
        problems.append("wap-pipeline status --json gave no report")
    elif not status["identity_holds"]:
        bad = [b for b in status["batches"] if not b["identity_holds"]]
        problems.append(
            f"status identity does not hold: sent {status['messages_sent']}, accounted {status['accounted']}, "
            f"breaker {status['breaker']}, batches {bad[:3]}, pipeline's own records {status['messages']}"
        )
    return problems
