"""Realistic payment events for `wap-pipeline send`: stable schema, unique keys, ISO-8601 times."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

EVENT_TYPES = ("payment.authorized", "payment.captured", "payment.refunded", "payout.paid", "fee.charged")
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")


def make_event(rng: random.Random, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    event_type = rng.choice(EVENT_TYPES)
    amount = rng.randint(100, 500_000)
    if event_type == "payment.refunded":
        amount = -amount
    occurred = now - timedelta(seconds=rng.randint(0, 3600), microseconds=rng.randint(0, 999_999))
    return {
        "event_id": f"evt_{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "idempotency_key": str(uuid.UUID(int=rng.getrandbits(128))),
        "event_type": event_type,
        "event_timestamp": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "account_id": f"acct_{rng.randint(1, 5000):05d}",
        "amount_minor": amount,
        "currency": rng.choice(CURRENCIES),
    }


def make_events(count: int, seed: int | None = None, now: datetime | None = None) -> list[dict]:
    """``count`` events that happened within the hour before ``now`` (default: the clock). Tests pass
    the one ``now`` they audit with, so generated data and the audit share a single notion of time."""
    rng = random.Random(seed if seed is not None else uuid.uuid4().int)
    now = now or datetime.now(UTC)
    return [make_event(rng, now) for _ in range(count)]
