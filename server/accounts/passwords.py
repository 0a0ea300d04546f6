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
import hmac
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from server import base64url
from server.cpu import available_cpus
from server.errors import ErrorReason, ResourceExhausted

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
# How much the open lane's threads yield the CPU (a nice value, Linux only):
# when the cores are short, the event loop (every other call) and the proven
# lane come first, and an anonymous storm's hashes take what they leave.
OPEN_LANE_NICENESS = 10


class HashingBusy(ResourceExhausted):
    """Every thread is hashing and the waiting line is full: refused at once."""

    def __init__(self) -> None:
        super().__init__(
            ErrorReason.ERROR_REASON_PASSWORD_HASHING_BUSY,
            "too many sign-ins at once; retry shortly",
            retry_after_seconds=1.0,
        )


def _yield_cpu(niceness: int) -> None:
    """Lower the calling thread's priority (Linux: nice is per thread)."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + niceness))
    except OSError:  # not permitted here: the lane runs at the process's priority
        pass


class HashingLane:
    """Threads of their own and a bounded line in front of them (FIFO, the executor's).

    A lane that `yields_to` another starts no hash while that one is hashing:
    memory-hard hashes slow each other down through the shared caches and
    memory bus, not only through the cores, so a nice value alone does not
    give the other lane its lone speed.
    """

    def __init__(
        self,
        name: str,
        threads: int,
        places: int,
        niceness: int = 0,
        yields_to: HashingLane | None = None,
    ) -> None:
        self.places = places  # running plus waiting
        self.in_flight = 0
        self._hashing = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._yields_to = yields_to
        self._executor = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix=name,
            initializer=_yield_cpu,
            initargs=(niceness,),
        )

    def has_room(self) -> bool:
        return self.in_flight < self.places

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        if self._yields_to is not None:
            await self._yields_to._idle.wait()
        self._hashing += 1
        self._idle.clear()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._hashing -= 1
            if not self._hashing:
                self._idle.set()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PasswordHasher:
    """Hashes and verifies passwords off the event loop, in two lanes, each with
    threads of its own behind a bounded line (anonymous callers cannot queue
    unbounded work):

    - the open lane, for anyone: as many threads as the CPUs this process may
      use, niced so that a storm of anonymous hashes yields the CPU, and
      starting no hash while the proven lane hashes;
    - the proven lane, for callers who proved a past success (a session
      credential of the account from an earlier sign-in): as many threads again,
      at the process's priority. A junk flood fills the open lane, never this
      one, so a fan who signed in before never waits behind it. When the proven
      lane is full, a proven caller takes a place in the open lane.
    """

    def __init__(self, cost: int, workers: int | None = None, waiting: int | None = None) -> None:
        self._cost = cost
        self.workers = workers or available_cpus()
        line = WAITING_PER_THREAD * self.workers if waiting is None else waiting
        self.proven = HashingLane(
            "scrypt-proven", self.workers, self.workers * (1 + WAITING_PER_THREAD)
        )
        self.open = HashingLane(
            "scrypt",
            self.workers,
            self.workers + line,
            OPEN_LANE_NICENESS,
            yields_to=self.proven,
        )
        # Verified when the email is unknown, so that answer costs a hash too:
        # an attacker cannot tell unknown emails from wrong passwords by timing.
        self._decoy: str | None = None

    @contextmanager
    def place(self, *, proven: bool = False) -> Iterator[HashingLane]:
        """A place in a lane's line, held for the block; HashingBusy at once if full.

        A caller that must do other bookkeeping before it hashes (the sign-in
        budgets) takes the place first, so nothing is counted for a call that
        is then refused, and verify_in_place inside the block hashes in it.
        """
        lane = self.proven if proven and self.proven.has_room() else self.open
        if not lane.has_room():
            raise HashingBusy
        lane.in_flight += 1
        try:
            yield lane
        finally:
            lane.in_flight -= 1

    async def hash(self, password: str) -> str:
        with self.place() as lane:
            return await lane.run(hash_password_blocking, password, self._cost)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if password matches stored; with stored None, costs a hash and says False."""
        with self.place() as lane:
            return await self.verify_in_place(lane, password, stored)

    async def verify_in_place(self, lane: HashingLane, password: str, stored: str | None) -> bool:
        """verify, in the lane of a place() the caller holds."""
        if stored is None:
            if self._decoy is None:
                self._decoy = await lane.run(
                    hash_password_blocking, secrets.token_urlsafe(16), self._cost
                )
            await lane.run(verify_password_blocking, password, self._decoy)
            return False
        return await lane.run(verify_password_blocking, password, stored)

    def close(self) -> None:
        self.open.close()
        self.proven.close()
