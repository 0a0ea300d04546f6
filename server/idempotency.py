"""AIP-155 request ids: a retried mutation returns its first answer, once.

Call `run_once` inside the transaction that makes the change. The key row is
inserted first: a concurrent duplicate blocks on the primary key until the
first transaction ends, then finds the stored answer. A failed call rolls its
key back with everything else, so a retry after an error runs again (nothing
happened the first time).

The fingerprint (what tells a retry from another request reusing its id)
leaves out secret fields: a plain SHA-256 of a SignUp, password included, let
anyone with a database dump test a guess with one hash, undoing the slow
password hash. So a SignUp retried with the same request_id and another
password gets the first answer (the account keeps the first password).

Records are kept for CONCERT_IDEMPOTENCY_TTL_HOURS (24 by default), then
pruned by a job: a retry within that window replays; a later one runs anew.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.errors import FieldViolation, InvalidArgument

ResponseT = TypeVar("ResponseT", bound=Message)


# Fields never hashed into a fingerprint, by message type.
SECRET_FIELDS = {"concert.v1.SignUpRequest": ("password",)}
PRUNE_JOB = "idempotency.prune"
_PRUNE_BATCH = 10_000


def fingerprint(request: Message) -> bytes:
    """A hash of the request without its request_id field and its secret fields."""
    copy = type(request)()
    copy.CopyFrom(request)
    left_out = ("request_id", *SECRET_FIELDS.get(copy.DESCRIPTOR.full_name, ()))
    for name in left_out:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


async def prune_expired_keys(conn: AsyncConnection, older_than: datetime) -> int:
    """Delete records created before `older_than`, a bounded batch per call (autocommit)."""
    cursor = await conn.execute(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
        "  SELECT ctid FROM idempotency_keys WHERE created_at < %s LIMIT %s))",
        (older_than, _PRUNE_BATCH),
    )
    return cursor.rowcount


async def run_once(
    conn: AsyncConnection,
    clock: Clock,
    *,
    scope: str,
    request_id: uuid.UUID | None,
    request: Message,
    response_type: type[ResponseT],
    execute: Callable[[], Awaitable[ResponseT]],
) -> ResponseT:
    """Run `execute` unless this (scope, request_id) already ran; must be inside a transaction."""
    if request_id is None:
        return await execute()
    digest = fingerprint(request)
    cursor = await conn.execute(
        "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (scope, request_id, digest, clock.now()),
    )
    if await cursor.fetchone() is not None:
        response = await execute()
        await conn.execute(
            "UPDATE idempotency_keys SET response = %s WHERE scope = %s AND request_id = %s",
            (response.SerializeToString(), scope, request_id),
        )
        return response
    cursor = await conn.execute(
        "SELECT fingerprint, response FROM idempotency_keys WHERE scope = %s AND request_id = %s",
        (scope, request_id),
    )
    row = await cursor.fetchone()
    assert row is not None and row[1] is not None  # committed together with the response
    if bytes(row[0]) != digest:
        raise InvalidArgument(
            [FieldViolation("request_id", "already used for a different request")],
            reason="REQUEST_ID_REUSED",
        )
    return response_type.FromString(bytes(row[1]))


async def run_once_in_transaction(
    pool: AsyncConnectionPool,
    clock: Clock,
    *,
    scope: str,
    request_id: uuid.UUID | None,
    request: Message,
    response_type: type[ResponseT],
    execute: Callable[[AsyncConnection], Awaitable[ResponseT]],
) -> ResponseT:
    """The usual shape of a mutation: one transaction holding the key and the change."""
    async with pool.connection() as conn, conn.transaction():
        return await run_once(
            conn,
            clock,
            scope=scope,
            request_id=request_id,
            request=request,
            response_type=response_type,
            execute=lambda: execute(conn),
        )
