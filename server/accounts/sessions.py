"""Session credentials: a signed (user id, expiry), checked with one HMAC.

Format: Signer.sign("session", version byte + user UUID (16 bytes) + expiry in
Unix milliseconds (8 bytes, big-endian)). Anyone may verify one with
verify_session; WalletService and QueueService.IssueToken accept them.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.signing import Signer

PURPOSE = "session"
_FORMAT = struct.Struct(">B16sq")
_VERSION = 1


@dataclass(frozen=True)
class Session:
    user_id: uuid.UUID
    expire_time: datetime


def issue_session(
    signer: Signer, user_id: uuid.UUID, now: datetime, ttl_seconds: int
) -> tuple[str, Session]:
    expire_time = _to_millis_precision(now + timedelta(seconds=ttl_seconds))
    payload = _FORMAT.pack(_VERSION, user_id.bytes, _millis(expire_time))
    return signer.sign(PURPOSE, payload), Session(user_id, expire_time)


def verify_session(
    signer: Signer, credential: str | None, now: datetime, *, expired_for: timedelta = timedelta(0)
) -> Session | None:
    """The session if the credential is ours, well-formed and not expired (or expired
    less than `expired_for` ago: a proof of a past sign-in, never a credential); else None."""
    if not credential:
        return None
    payload = signer.verify(PURPOSE, credential)
    if payload is None or len(payload) != _FORMAT.size:
        return None
    version, user_bytes, expire_millis = _FORMAT.unpack(payload)
    if version != _VERSION:
        return None
    expire_time = _EPOCH + timedelta(milliseconds=expire_millis)
    if expire_time <= now - expired_for:
        return None
    return Session(uuid.UUID(bytes=user_bytes), expire_time)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _to_millis_precision(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
