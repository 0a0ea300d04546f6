"""When the outbox sends a callback again: exponential backoff with full jitter.

Attempt n (1 for the first retry) waits a random time in [cap/2, cap] where
cap = min(maximum, base * 2**(n-1)): doubling spreads one module's retries
out while the server is down; the random half keeps many payments that failed
in the same second (the server restarting) from all coming back in the same
second; the lower bound keeps a retry from following its failure at once.
Pure: the dispatcher passes the attempt count and its random source.
"""

from __future__ import annotations

import random
from datetime import timedelta


def retry_delay(attempt: int, base: timedelta, maximum: timedelta, rng: random.Random) -> timedelta:
    """How long to wait after the `attempt`-th failed attempt (1-based)."""
    exponent = min(max(attempt, 1) - 1, 32)  # 2**32 times any base is past any maximum
    cap = min(maximum, base * (2**exponent))
    return cap * (0.5 + rng.random() / 2)
