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
from concurrent.futures import ThreadPoolExecutor

from server import base64url

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


class PasswordHasher:
    """Hashes and verifies passwords in a thread pool sized to the machine."""

    def __init__(self, cost: int, workers: int | None = None) -> None:
        self._cost = cost
        self._executor = ThreadPoolExecutor(
            max_workers=workers or os.cpu_count() or 2, thread_name_prefix="scrypt"
        )
        # Verified when the email is unknown, so that answer costs a hash too:
        # an attacker cannot tell unknown emails from wrong passwords by timing.
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, hash_password_blocking, password, self._cost
        )

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if password matches stored; with stored None, costs a hash and says False."""
        loop = asyncio.get_running_loop()
        if stored is None:
            if self._decoy is None:
                self._decoy = await self.hash(secrets.token_urlsafe(16))
            await loop.run_in_executor(
                self._executor, verify_password_blocking, password, self._decoy
            )
            return False
        return await loop.run_in_executor(
            self._executor, verify_password_blocking, password, stored
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
