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
    behind a bounded waiting line (anonymous callers cannot queue unbounded work)."""

    def __init__(self, cost: int, workers: int | None = None, waiting: int | None = None) -> None:
        self._cost = cost
        self.workers = workers or available_cpus()
        self.max_in_flight = self.workers + (
            WAITING_PER_THREAD * self.workers if waiting is None else waiting
        )
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="scrypt")
        # Verified when the email is unknown, so that answer costs a hash too:
        # an attacker cannot tell unknown emails from wrong passwords by timing.
        self._decoy: str | None = None

    @contextmanager
    def place(self) -> Iterator[None]:
        """A place in the bounded line, held for the block; HashingBusy at once if full.

        A caller that must do other bookkeeping before it hashes (the sign-in
        budgets) takes the place first, so nothing is counted for a call that
        is then refused, and verify_in_place inside the block hashes in it.
        """
        if self.in_flight >= self.max_in_flight:
            raise HashingBusy
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _execute(self, function: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        with self.place():
            return await self._execute(function, *args)

    async def hash(self, password: str) -> str:
        return await self._run(hash_password_blocking, password, self._cost)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if password matches stored; with stored None, costs a hash and says False."""
        with self.place():
            return await self.verify_in_place(password, stored)

    async def verify_in_place(self, password: str, stored: str | None) -> bool:
        """verify, by a caller that holds a place()."""
        if stored is None:
            if self._decoy is None:
                self._decoy = await self._execute(
                    hash_password_blocking, secrets.token_urlsafe(16), self._cost
                )
            await self._execute(verify_password_blocking, password, self._decoy)
            return False
        return await self._execute(verify_password_blocking, password, stored)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
