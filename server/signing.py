"""HMAC signing for the credentials the service hands out, with rotating keys.

Session credentials and queue tokens are `<kid>.<base64url payload>.<base64url mac>`:
opaque to clients, unforgeable without the key, checked with one HMAC and no
database read. The MAC covers the purpose, the key id and the payload.
Credentials from before key ids (`<payload>.<mac>`) verify with key "0", the
one secret the database held until migration 0007, until they expire.

Keys come from one of two places:

- the database (`signing_keys`, the default): every process against it signs
  and verifies alike. `python -m server rotate-key` adds a key that becomes the
  signing key KEY_ACTIVATION_DELAY later (every process re-reads the keys every
  KEY_RELOAD_SECONDS, so all of them know a key before any credential carries
  it), and deletes the keys superseded longer ago than credentials live, so a
  credential verifies until it expires.
- a file (`CONCERT_SIGNING_KEYS_FILE`, a mounted secret) or the environment
  (`CONCERT_SIGNING_KEYS`, e.g. from a secret reference): entries `<kid>
  <base64url key>`, one per line (in the variable, `;` separates them too), the
  first one signs, the others only verify. Then nothing secret is in the
  database, and a dump or a replica cannot mint tokens. Rotation is editing the
  secret: add the new key below, roll out, move it to the top, roll out, drop
  the old one after a credential lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import AsyncConnection

from server import base64url
from server.clock import Clock
from server.db.unit_of_work import Lock, LockKind, UnitOfWork, unit_on

_SEPARATOR = "."
LEGACY_KID = "0"
KEY_ACTIVATION_DELAY = timedelta(seconds=60)
KEY_RELOAD_SECONDS = 20.0
_KID = re.compile(r"[A-Za-z0-9_-]{1,16}")
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes
    active_from: datetime


class Signer:
    """Signs with the current key, verifies with every key it knows."""

    def __init__(self, key: bytes | None = None) -> None:
        """Signer(key): one key, signing at once (tests, tools); Signer(): keys come by use()."""
        self._keys: dict[str, bytes] = {}
        self.current_kid = ""
        if key is not None:
            self.use([SigningKey("1", key, datetime.min.replace(tzinfo=UTC))], current="1")

    def use(
        self, keys: Iterable[SigningKey], *, now: datetime | None = None, current: str | None = None
    ) -> None:
        """Adopt a key set: `current` signs, or else the newest key active at `now`."""
        known = list(keys)
        for key in known:
            if len(key.secret) < MIN_KEY_BYTES:
                raise ValueError(f"signing key {key.kid!r} must be at least 32 bytes")
            if not _KID.fullmatch(key.kid):
                raise ValueError(f"signing key id {key.kid!r}: 1 to 16 of A-Z a-z 0-9 _ -")
        if current is None:
            active = [k for k in known if now is None or k.active_from <= now]
            if not active:
                raise ValueError("no signing key is active yet")
            current = max(active, key=lambda k: k.active_from).kid
        self._keys = {key.kid: key.secret for key in known}
        if current not in self._keys:
            raise ValueError(f"no signing key {current!r}")
        self.current_kid = current

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def sign(self, purpose: str, payload: bytes) -> str:
        """An opaque string carrying payload, bound to a purpose ('session', 'queue')."""
        kid = self.current_kid
        mac = _mac(self._keys[kid], purpose, kid, payload)
        return _SEPARATOR.join((kid, base64url.encode(payload), base64url.encode(mac)))

    def verify(self, purpose: str, credential: str) -> bytes | None:
        """The payload if the credential was signed by a key we know for this purpose, else None."""
        parts = credential.split(_SEPARATOR)
        if len(parts) == 3:
            kid, encoded_payload, encoded_mac = parts
        elif len(parts) == 2:  # before key ids: key "0", MAC without a kid
            kid, (encoded_payload, encoded_mac) = LEGACY_KID, parts
        else:
            return None
        secret = self._keys.get(kid)
        if secret is None or not encoded_payload or not encoded_mac:
            return None
        try:
            payload = base64url.decode(encoded_payload)
            mac = base64url.decode(encoded_mac)
        except ValueError:
            return None
        expected = (
            _mac(secret, purpose, kid, payload)
            if len(parts) == 3
            else _legacy_mac(secret, purpose, payload)
        )
        if not hmac.compare_digest(mac, expected):
            return None
        return payload


def _mac(secret: bytes, purpose: str, kid: str, payload: bytes) -> bytes:
    message = purpose.encode() + b"\0" + kid.encode() + b"\0" + payload
    return hmac.new(secret, message, hashlib.sha256).digest()


def _legacy_mac(secret: bytes, purpose: str, payload: bytes) -> bytes:
    return hmac.new(secret, purpose.encode() + b"\0" + payload, hashlib.sha256).digest()


# -- where keys come from ------------------------------------------------------------


def read_keys_file(path: Path) -> tuple[list[SigningKey], str]:
    """CONCERT_SIGNING_KEYS_FILE: `<kid> <base64url key>` per line; the first one signs."""
    return parse_keys(path.read_text().splitlines(), str(path))


def read_keys_variable(value: str) -> tuple[list[SigningKey], str]:
    """CONCERT_SIGNING_KEYS: the file's entries, separated by new lines or `;`."""
    return parse_keys(re.split(r"[;\n]", value), "CONCERT_SIGNING_KEYS")


def parse_keys(entries: Iterable[str], source: str) -> tuple[list[SigningKey], str]:
    """`<kid> <base64url key>` entries (blank ones and `#` comments skipped); the first signs."""
    keys = []
    for number, line in enumerate(entries, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            kid, encoded = line.split()
            secret = base64url.decode(encoded)
        except ValueError:
            raise ValueError(f"{source}:{number}: expected '<kid> <base64url key>'") from None
        keys.append(SigningKey(kid, secret, datetime.min.replace(tzinfo=UTC)))
    if not keys:
        raise ValueError(f"{source}: no signing key")
    return keys, keys[0].kid


async def load_signing_keys(conn: AsyncConnection, clock: Clock) -> list[SigningKey]:
    """The database's keys; the first process against an empty table creates one."""
    async with unit_on(conn, clock) as unit:
        await _first_key(unit, clock.now())
        return await read_signing_keys(conn)


async def _first_key(unit: UnitOfWork, now: datetime) -> None:
    """Key "1", signing at once, when there is none (under the secrets lock)."""
    await unit.lock(Lock.of(LockKind.SECRETS))
    await unit.execute(
        "INSERT INTO signing_keys (kid, secret, created_at, active_from)"
        " SELECT '1', %s, %s, %s WHERE NOT EXISTS (SELECT FROM signing_keys)",
        (secrets.token_bytes(32), now, now - timedelta(seconds=1)),
    )


async def read_signing_keys(conn: AsyncConnection) -> list[SigningKey]:
    cursor = await conn.execute("SELECT kid, secret, active_from FROM signing_keys")
    return [SigningKey(row[0], bytes(row[1]), row[2]) for row in await cursor.fetchall()]


@dataclass(frozen=True)
class Rotation:
    kid: str
    active_from: datetime
    retired: list[str]


async def rotate_signing_key(conn: AsyncConnection, clock: Clock, keep_for: timedelta) -> Rotation:
    """Add a key that signs from KEY_ACTIVATION_DELAY on; delete the keys superseded
    longer than `keep_for` ago (no credential they signed is still valid)."""
    async with unit_on(conn, clock) as unit:
        now = clock.now()
        await _first_key(unit, now)  # a key signs now, whatever the rotation adds
        cursor = await unit.execute(
            "SELECT coalesce(max(kid::bigint), 0) + 1 FROM signing_keys WHERE kid ~ '^[0-9]+$'"
        )
        row = await cursor.fetchone()
        assert row is not None
        kid, active_from = str(row[0]), now + KEY_ACTIVATION_DELAY
        await unit.execute(
            "INSERT INTO signing_keys (kid, secret, created_at, active_from)"
            " VALUES (%s, %s, %s, %s)",
            (kid, secrets.token_bytes(32), now, active_from),
        )
        # A process keeps signing with the superseded key until its next re-read
        # (KEY_RELOAD_SECONDS after the newer one activates, at worst): its last
        # credentials live that much longer.
        superseded_before = now - keep_for - timedelta(seconds=KEY_RELOAD_SECONDS)
        cursor = await unit.execute(
            "DELETE FROM signing_keys old WHERE EXISTS ("
            "  SELECT FROM signing_keys newer WHERE newer.active_from > old.active_from"
            "   AND newer.active_from <= %s) RETURNING kid",
            (superseded_before,),
        )
        retired = sorted(row[0] for row in await cursor.fetchall())
    return Rotation(kid, active_from, retired)
