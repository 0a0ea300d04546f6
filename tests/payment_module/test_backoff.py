"""The callback's retry schedule: doubling, capped, jittered within its upper half."""

from __future__ import annotations

import random
from datetime import timedelta

from server.payment_module.backoff import retry_delay

BASE = timedelta(milliseconds=500)
MAXIMUM = timedelta(seconds=60)


def test_each_retry_waits_between_half_and_all_of_a_doubling_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        cap = min(MAXIMUM, BASE * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, BASE, MAXIMUM, rng) for _ in range(200)]
        assert all(cap / 2 <= delay <= cap for delay in delays), attempt
        # Jitter: the delays of one attempt differ (payments that failed together spread out).
        assert len(set(delays)) > 100


def test_the_cap_holds_for_any_attempt_count() -> None:
    rng = random.Random(2)
    assert retry_delay(10_000, BASE, MAXIMUM, rng) <= MAXIMUM
    assert retry_delay(0, BASE, MAXIMUM, rng) <= BASE


def test_the_random_source_decides_the_jitter() -> None:
    first = [retry_delay(3, BASE, MAXIMUM, random.Random(9)) for _ in range(3)]
    again = [retry_delay(3, BASE, MAXIMUM, random.Random(9)) for _ in range(3)]
    assert first == again
