"""A chaos schedule, drawn from one seed: what is sent, which faults hit, and where each message must end.

Everything random about a schedule comes from ``random.Random(seed)`` here, so ``--seed S`` replays
the same mix and the same fault choices (timings of a real run still vary a little: botocore's jitter,
the machine's load).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from wap_pipeline.events import make_events
from wap_pipeline_tests.malformed import MALFORMED

# Boundaries a `kill -9` can hit (wap_pipeline.hooks.fault_point): mid SQS drain (records put, messages not yet
# deleted), after the raw append, around the standardized WAP steps, and inside the curated commit.
KILL_POINTS = (
    "ingest.after_put_before_delete",
    "raw.after_append",
    "standardized.after_branch_write",
    "standardized.after_audit",
    "standardized.after_publish",
    "curated.before_commit",
)

# Where a commit can succeed and its response be lost (`raise` right after it: the step fails and its
# retry must find the batch already there), and the tables a foreign writer commits to meanwhile.
LOST_RESPONSE_POINTS = ("raw.after_append", "standardized.after_publish", "curated.after_commit")
CONFLICTING_TABLES = ("raw", "standardized", "curated")


def _future(event: dict) -> None:
    """Stamped three days after the event was made (so after its batch lands), whatever the clock."""
    made = datetime.fromisoformat(event["event_timestamp"])
    event["event_timestamp"] = (made + timedelta(days=3)).isoformat().replace("+00:00", "Z")


# Well-formed objects that break a business rule: the standardized audit must stop them (FMEA 2.2).
CDE_VIOLATIONS = {
    "null_idempotency_key": lambda e: e.update(idempotency_key=None),
    "blank_event_type": lambda e: e.update(event_type="  "),
    "unparseable_timestamp": lambda e: e.update(event_timestamp="yesterday at noon"),
    "timestamp_in_future": _future,
    "lowercase_currency": lambda e: e.update(currency="eur"),
    "missing_account": lambda e: e.pop("account_id"),
    # Hostile values: well-formed JSON that must be flagged, never crash a step.
    "timestamp_year_one": lambda e: e.update(event_timestamp="0001-01-01T00:00:00Z"),
    "amount_past_int64": lambda e: e.update(amount_minor=2**63),
    "account_of_100k_chars": lambda e: e.update(account_id="a" * 100_000),
}

# Records that do not fit the standardized schema (FMEA 2.1): a new field (recovered by evolving the
# schema) or a value of the wrong JSON type (recovered by quarantining the record).
NEW_FIELDS = ("loyalty_tier", "channel", "merchant_category")
SCHEMA_BREAKS = ("new_field", "wrong_type")


@dataclass
class Message:
    """One logical message and where it must end after recovery."""

    kind: str  # good | duplicate | correction | malformed | cde:<rule> | schema:new_field | schema:wrong_type
    body: str
    event: dict | None = None  # the event as sent (None for malformed bodies)
    fixed: dict | None = None  # the corrected event re-injected as a replay, if any
    new_field: str | None = None


@dataclass
class Plan:
    seed: int
    messages: list[Message]  # first wave, in sending order (duplicates included)
    later: list[Message]  # a second wave, sent while the pipeline is (possibly) stopped
    kill_point: str | None
    error_rate: float
    partial_put_rate: float
    blackout: tuple[float, float, str] | None  # (after seconds, for seconds, mode)
    # `wap-pipeline maintain --older-than 0s` (expire every snapshot it may) at this point, if any.
    maintain_at: str | None = None
    # DAGSTER_HOME deleted after the faulted run (sensor cursors, partitions, runs, check results lost).
    lose_instance: bool = False
    # A commit whose response is lost after it succeeded (a fault point that raises right after it).
    lost_response: str | None = None
    # Another writer commits to the tables while the pipeline runs (catalog conflicts).
    conflicting_writer: bool = False
    # A second `wap-pipeline run --until-idle` beside the faulted one.
    second_runner: bool = False
    notes: list[str] = field(default_factory=list)

    def all_messages(self) -> list[Message]:
        return self.messages + self.later

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for message in self.all_messages():
            kinds[message.kind] = kinds.get(message.kind, 0) + 1
        mix = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
        replays = sum(1 for m in self.all_messages() if m.fixed is not None)
        faults = [f"kill@{self.kill_point}" if self.kill_point else "no kill"]
        if self.error_rate:
            faults.append(f"throttle {self.error_rate:.0%} partial-put {self.partial_put_rate:.0%}")
        if self.blackout:
            after, seconds, mode = self.blackout
            faults.append(f"blackout {seconds:.1f}s ({mode}) after {after:.1f}s")
        if self.lost_response:
            faults.append(f"response lost after {self.lost_response}")
        if self.conflicting_writer:
            faults.append("conflicting writer")
        if self.second_runner:
            faults.append("second runner")
        if self.lose_instance:
            faults.append("lost DAGSTER_HOME")
        if self.maintain_at:
            faults.append(f"maintain --older-than 0s {self.maintain_at}")
        later = f"; second wave {len(self.later)}" if self.later else ""
        return f"[{mix}; replays {replays}{later}] {'; '.join(faults)}"


def _body(event: dict) -> str:
    return orjson.dumps(event).decode()


def make_plan(seed: int) -> Plan:
    rng = random.Random(seed)
    events = iter(make_events(40, seed=seed))

    def good() -> Message:
        event = next(events)
        return Message("good", _body(event), event)

    first = [good() for _ in range(rng.randint(5, 12))]
    # Duplicate deliveries: the same body sent again (a new SQS message carrying the same event).
    for original in rng.sample(first, k=rng.randint(0, 3)):
        first.append(Message("duplicate", original.body, original.event))
    for kind in rng.sample(sorted(MALFORMED), k=rng.choice((0, 0, 1, 1, 2))):
        first.append(Message("malformed", MALFORMED[kind]))
    for rule in rng.sample(sorted(CDE_VIOLATIONS), k=rng.choice((0, 1, 1, 2))):
        event = next(events)
        fixed = dict(event)
        CDE_VIOLATIONS[rule](event)
        first.append(Message(f"cde:{rule}", _body(event), event, fixed if rng.random() < 0.5 else None))
    if rng.random() < 0.5:
        kind = rng.choice(SCHEMA_BREAKS)
        event = next(events)
        fixed = dict(event)
        name = None
        if kind == "new_field":
            name = rng.choice(NEW_FIELDS)
            event[name] = rng.choice(("gold", "web", "5411"))
            fixed = None  # evolving the schema publishes the record as it is
        else:
            event["amount_minor"] = f"{event['amount_minor'] / 100:.2f}"  # a string where a long belongs
            fixed = fixed if rng.random() < 0.5 else None
        first.append(Message(f"schema:{kind}", _body(event), event, fixed, name))
    # Corrections: a later version of an event (same idempotency_key, a new event_id, a later
    # event_timestamp, another amount) -- curated must keep it, whichever batch each copy lands in.
    for original in rng.sample([m for m in first if m.kind == "good"], k=rng.choice((0, 0, 1, 2))):
        first.append(Message("correction", *_correction(original.event, next(events))))
    rng.shuffle(first)

    later: list[Message] = []
    if rng.random() < 0.3:
        later = [good() for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.5:  # a late duplicate of something from the first wave
            original = rng.choice([m for m in first if m.kind == "good"])
            later.append(Message("duplicate", original.body, original.event))

    kill_point = rng.choice(KILL_POINTS) if rng.random() < 0.6 else None
    bad = [m for m in first if m.kind.startswith(("cde:", "schema:"))]
    if kill_point and bad and rng.random() < 0.5:
        # A bad record stops its batch before publish, so a later kill point would never be reached:
        # half the time the bad records arrive in the second wave instead, after the crash.
        first = [m for m in first if m not in bad]
        later += bad
    error_rate = partial = 0.0
    if rng.random() < 0.7:
        error_rate = round(rng.uniform(0.10, 0.40), 2)
        partial = round(rng.uniform(0.10, 0.40), 2)
    blackout = None
    if rng.random() < 0.35:
        blackout = (
            round(rng.uniform(0.5, 4.0), 1),
            round(rng.uniform(1.0, 3.0), 1),
            rng.choice(("reset", "503")),
        )
    maintain_at = rng.choice(("before_recovery", "after_recovery")) if rng.random() < 0.3 else None
    lose_instance = rng.random() < 0.15
    lost_response = rng.choice(LOST_RESPONSE_POINTS) if rng.random() < 0.25 else None
    conflicting_writer = rng.random() < 0.25
    second_runner = rng.random() < 0.25
    return Plan(
        seed,
        first,
        later,
        kill_point,
        error_rate,
        partial,
        blackout,
        maintain_at,
        lose_instance,
        lost_response,
        conflicting_writer,
        second_runner,
    )


def _correction(event: dict, fresh: dict) -> tuple[str, dict]:
    made = datetime.fromisoformat(event["event_timestamp"])
    corrected = {
        **event,
        "event_id": fresh["event_id"],
        "event_timestamp": (made + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "amount_minor": event["amount_minor"] + 1,
    }
    return _body(corrected), corrected
