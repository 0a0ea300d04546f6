"""Pacing the refusals of password calls, so a storm that does not wait is made to.

A full hashing line refuses a password call at once (PASSWORD_HASHING_BUSY,
RetryInfo one second), and so does a spent sign-in budget (TOO_MANY_ATTEMPTS).
Clients that honour the RetryInfo come back a second later. A botnet that
calls again at once is refused as fast as the event loop can answer: about two
thousand refusals a second on one core, each waiting its turn in grpc's queue
of SignIn calls ahead of the fans' own, and each taking the loop from the
fans' hashes (docs/load-test-report.md, Rounds 8 to 10). Spread over thousands
of addresses, no per-address limit sees it.

So a process answers at most AT_ONCE_PER_SECOND refusals a second at once (a
token bucket with as large a burst). Beyond that, a refused call is held for
the retry delay it would have been told to wait, and then tried once more:
it goes on if the line has room by then, and is refused if not. (A refusal
that asks for a longer wait, a spent sign-in budget, is answered after the
hold without a second try.) A call that
gets a place is never held, so a fan who signed in before (the proven lane)
never waits here; a botnet's calls come back at the pace a RetryInfo asks
for, whatever it does; an honest caller refused in a storm waits its delay on
the server instead of on the client, and gets its second try there.

Held calls are bounded per process (beyond MAX_HELD, refusals go at once, as
before): a flood cannot turn the hold into unbounded memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.errors import ResourceExhausted

_T = TypeVar("_T")

# The delay a refusal's RetryInfo asks for (PASSWORD_HASHING_BUSY's), and how
# long a held call waits.
RETRY_AFTER_SECONDS = 1.0
# Refusals a process answers at once, per second and in a burst: a crowd of
# clients honouring RetryInfo stays about at it (the sign-in storm's 64 fans are
# refused 47 times a second, and were served the same at 50 as at 100); a
# botnet calling as fast as answered (about 2,000 a second on one core) is far
# above it. 100 left a fan's hash too little of two cores under a junk storm
# (docs/load-test-report.md, Round 13).
AT_ONCE_PER_SECOND = 50
# Calls held at once, per process. Each is a pending call: 1,000 held raised
# the server's RSS by about 13 MiB (1,100 junk SignIns at once, against the
# same calls all refused at once; docs/reliability.md).
MAX_HELD = 1_000


class RefusalPacing:
    """Refusals at once up to a rate; beyond it, one retry delay on the server first."""

    def __init__(
        self,
        at_once_per_second: float = AT_ONCE_PER_SECOND,
        retry_after_seconds: float = RETRY_AFTER_SECONDS,
        max_held: int = MAX_HELD,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.at_once_per_second = at_once_per_second
        self.retry_after_seconds = retry_after_seconds
        self.max_held = max_held
        self.held = 0
        self._monotonic = monotonic
        self._sleep = sleep
        self._at_once = float(at_once_per_second)  # refusals at once left
        self._updated = monotonic()

    async def attempt(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """call(); if refused (RESOURCE_EXHAUSTED) beyond the rate, once more after a delay."""
        try:
            return await call()
        except ResourceExhausted as refused:
            if not self._hold_this_refusal():
                raise
            first = refused
        self.held += 1
        try:
            await self._sleep(self.retry_after_seconds)
        finally:
            self.held -= 1
        asked = first.retry_after_seconds
        if asked is None or asked > self.retry_after_seconds:
            raise first  # a spent budget stays spent a while: a second try would cost for nothing
        return await call()

    def _hold_this_refusal(self) -> bool:
        now = self._monotonic()
        earned = (now - self._updated) * self.at_once_per_second
        self._at_once = min(float(self.at_once_per_second), self._at_once + earned)
        self._updated = now
        if self._at_once >= 1.0:
            self._at_once -= 1.0
            return False
        return self.held < self.max_held
