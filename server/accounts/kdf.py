"""scrypt password hashes: making one and checking a password against one (blocking).

A stored hash records its own parameters (`scrypt$<log2 n>$<r>$<p>$<salt>$<key>`),
so lowering or raising CONCERT_PASSWORD_HASH_COST never locks anyone out: each
hash verifies with the parameters it was made with.

These run in the hasher's threads and in its worker processes
(server/accounts/passwords.py); the workers import this module alone, so it
depends on nothing of the server's but base64url.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

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
