"""HMAC signing for the credentials the service hands out.

Session credentials and queue tokens are `base64url(payload).base64url(mac)`:
opaque to clients, unforgeable without the server secret, and checked with one
HMAC and no database read. The secret lives in the database (server_secrets)
so every server process against it signs and verifies alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from psycopg import AsyncConnection

from server import base64url
from server.clock import Clock
from server.db.locks import LockNamespace

_SEPARATOR = "."


class Signer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("signing key must be at least 32 bytes")
        self._key = key

    def sign(self, purpose: str, payload: bytes) -> str:
        """An opaque string carrying payload, bound to a purpose ('session', 'queue')."""
        mac = self._mac(purpose, payload)
        return base64url.encode(payload) + _SEPARATOR + base64url.encode(mac)

    def verify(self, purpose: str, credential: str) -> bytes | None:
        """The payload if the credential was signed by us for this purpose, else None."""
        encoded_payload, sep, encoded_mac = credential.partition(_SEPARATOR)
        if not sep or not encoded_payload or not encoded_mac:
            return None
        try:
            payload = base64url.decode(encoded_payload)
            mac = base64url.decode(encoded_mac)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            return None
        return payload

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + payload, hashlib.sha256).digest()


async def load_signing_key(conn: AsyncConnection, clock: Clock, name: str = "signing") -> bytes:
    """The shared secret, created by whichever process asks first."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (int(LockNamespace.SECRETS),))
        await conn.execute(
            "INSERT INTO server_secrets (name, value, created_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING",
            (name, secrets.token_bytes(32), clock.now()),
        )
        cursor = await conn.execute("SELECT value FROM server_secrets WHERE name = %s", (name,))
        row = await cursor.fetchone()
    assert row is not None
    return bytes(row[0])
