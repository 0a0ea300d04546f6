"""Password hashing with scrypt, off the event loop.

A stored hash records its own parameters (`scrypt$<log2 n>$<r>$<p>$<salt>$<key>`),
so lowering or raising CONCERT_PASSWORD_HASH_COST never locks anyone out: each
hash verifies with the parameters it was made with.

hashlib.scrypt releases the GIL, so hashing in a thread pool uses every core
while the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import itertools
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from server import base64url
from server.cpu import available_cpus
from server.errors import ResourceExhausted

_T = TypeVar("_T")

_SCHEME = "scrypt"
_R = 8
_P = 1
_KEY_BYTES = 32
_SALT_BYTES = 16


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=_KEY_BYTES,
        maxmem=256 * n * r + (1 << 20),
    )


def hash_password_blocking(password: str, cost: int) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, cost, _R, _P)
    return "$".join(
        (_SCHEME, str(cost), str(_R), str(_P), base64url.encode(salt), base64url.encode(key))
    )


def verify_password_blocking(password: str, stored: str) -> bool:
    try:
        scheme, cost, r, p, salt, key = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64url.decode(key)
        actual = _scrypt(password, base64url.decode(salt), int(cost), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# Hashes that may wait for a thread, per thread: beyond them a call is refused
# at once (RESOURCE_EXHAUSTED) instead of queueing behind a storm. With two
# waiting per thread, an accepted call waits at most about two hashes' time.
WAITING_PER_THREAD = 2
# Places kept, per thread, for callers who proved a past success (a session
# credential of the account from an earlier sign-in): a flood of junk fills the
# line above, never these, and such a caller is served before any junk waiting.
PROVEN_PLACES_PER_THREAD = 1


class HashingBusy(ResourceExhausted):
    """Every thread is hashing and the waiting line is full: refused at once."""

    def __init__(self) -> None:
        super().__init__(
            "PASSWORD_HASHING_BUSY",
            "too many sign-ins at once; retry shortly",
            retry_after_seconds=1.0,
        )


class PasswordHasher:
    """Hashes and verifies passwords in a thread pool sized to the CPUs this process may use,
    behind a bounded waiting line (anonymous callers cannot queue unbounded work).

    The line has two kinds of places: `max_in_flight` for anyone, and
    `proven_places` more for proven callers only; when a thread frees, a proven
    caller waiting goes first. Threads are handed out here, never by the
    executor's own queue, so that order is the one that counts.
    """

    def __init__(self, cost: int, workers: int | None = None, waiting: int | None = None) -> None:
        self._cost = cost
        self.workers = workers or available_cpus()
        self.max_in_flight = self.workers + (
            WAITING_PER_THREAD * self.workers if waiting is None else waiting
        )
        self.proven_places = PROVEN_PLACES_PER_THREAD * self.workers
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="scrypt")
        self._running = 0  # threads handed out
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (rank, order, waiter)
        self._order = itertools.count()
        # Verified when the email is unknown, so that answer costs a hash too:
        # an attacker cannot tell unknown emails from wrong passwords by timing.
        self._decoy: str | None = None

    @contextmanager
    def place(self, *, proven: bool = False) -> Iterator[None]:
        """A place in the bounded line, held for the block; HashingBusy at once if full.

        A caller that must do other bookkeeping before it hashes (the sign-in
        budgets) takes the place first, so nothing is counted for a call that
        is then refused, and verify_in_place inside the block hashes in it.
        """
        limit = self.max_in_flight + (self.proven_places if proven else 0)
        if self.in_flight >= limit:
            raise HashingBusy
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _thread(self, proven: bool) -> None:
        """Wait for a hashing thread: proven callers first, then in arrival order."""
        if self._running < self.workers and not self._waiting:
            self._running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if proven else 1, next(self._order), waiter))
        try:
            await waiter  # the thread is handed over: _running stays as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._hand_over()  # handed to us as we were cancelled: pass it on
            raise

    def _hand_over(self) -> None:
        while self._waiting:
            waiter = heapq.heappop(self._waiting)[2]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._running -= 1

    async def _execute(self, function: Callable[..., _T], *args: object, proven: bool) -> _T:
        await self._thread(proven)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._hand_over()

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        with self.place():
            return await self._execute(function, *args, proven=False)

    async def hash(self, password: str) -> str:
        return await self._run(hash_password_blocking, password, self._cost)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if password matches stored; with stored None, costs a hash and says False."""
        with self.place():
            return await self.verify_in_place(password, stored)

    async def verify_in_place(
        self, password: str, stored: str | None, *, proven: bool = False
    ) -> bool:
        """verify, by a caller that holds a place()."""
        if stored is None:
            if self._decoy is None:
                self._decoy = await self._execute(
                    hash_password_blocking, secrets.token_urlsafe(16), self._cost, proven=proven
                )
            await self._execute(verify_password_blocking, password, self._decoy, proven=proven)
            return False
        return await self._execute(verify_password_blocking, password, stored, proven=proven)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
