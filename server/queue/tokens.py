"""Queue tokens: opaque, signed (token id, user id, queue number, expiry).

Format: Signer.sign("queue", payload) where payload is version (1 byte), token
UUID (16), user UUID (16), queue number (8, big-endian) and expiry in Unix
microseconds (8). The HMAC makes it unforgeable; the token id is 122 random
bits besides. The gate trusts the signed expiry without a database read; the
queue's own methods read the token's row, which is authoritative.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.signing import Signer

PURPOSE = "queue"
_FORMAT = struct.Struct(">B16s16sqq")
_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class QueueToken:
    token_id: uuid.UUID
    user_id: uuid.UUID
    queue_number: int
    expire_time: datetime


def sign_queue_token(signer: Signer, token: QueueToken) -> str:
    micros = (token.expire_time - _EPOCH) // timedelta(microseconds=1)
    payload = _FORMAT.pack(
        _VERSION, token.token_id.bytes, token.user_id.bytes, token.queue_number, micros
    )
    return signer.sign(PURPOSE, payload)


def read_queue_token(signer: Signer, credential: str | None) -> QueueToken | None:
    """The claims of a token we signed, expired or not; None if absent, malformed or forged."""
    if not credential:
        return None
    payload = signer.verify(PURPOSE, credential)
    if payload is None or len(payload) != _FORMAT.size:
        return None
    version, token_bytes, user_bytes, queue_number, micros = _FORMAT.unpack(payload)
    if version != _VERSION:
        return None
    return QueueToken(
        uuid.UUID(bytes=token_bytes),
        uuid.UUID(bytes=user_bytes),
        queue_number,
        _EPOCH + timedelta(microseconds=micros),
    )
