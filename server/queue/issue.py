"""IssueToken: authenticate, then take a place in line (or get the one already held)."""

from __future__ import annotations

import uuid

from psycopg_pool import AsyncConnectionPool

from concert.v1 import queue_pb2
from server.accounts.authentication import (
    authenticate_password,
    authenticate_session,
    check_password_fields,
)
from server.accounts.runtime import AccountRuntime
from server.clock import Clock
from server.db.unit_of_work import unit_of_work
from server.errors import Violations
from server.queue import store
from server.queue.admission import AdmissionState
from server.queue.presence import Presented, QueuePresence
from server.queue.runtime import QueueRuntime
from server.signing import Signer


async def authenticate_issue(
    pool: AsyncConnectionPool,
    clock: Clock,
    signer: Signer,
    accounts: AccountRuntime,
    request: queue_pb2.IssueTokenRequest,
    client_address: str,
) -> uuid.UUID:
    """The fan asking for a token, by password (one hash) or session credential (one HMAC)."""
    violations = Violations()
    credential = request.WhichOneof("credential")
    if credential is None:
        violations.add("credential", "a password or a session_token is required")
    elif credential == "password":
        check_password_fields(
            violations, request.password.email, request.password.password, "password."
        )
    elif not request.session_token or len(request.session_token) > 2048:
        violations.add("session_token", "required, at most 2048 characters")
    violations.raise_if_any()
    if credential == "password":
        return await authenticate_password(
            pool,
            clock,
            accounts,
            request.password.email,
            request.password.password,
            client_address,
        )
    return authenticate_session(signer, clock, request.session_token)


async def take_place_in_line(
    pool: AsyncConnectionPool,
    clock: Clock,
    runtime: QueueRuntime,
    presence: QueuePresence,
    user_id: uuid.UUID,
) -> Presented:
    """The user's live token, extended; or a new one with the next queue number.

    A fan with no live token (nearly every call on on-sale day) gets one from a
    single autocommit statement (store.claim_first_token): one round trip
    instead of five. Everyone else takes the locked path.
    """
    async with pool.connection() as conn:
        claimed = await store.claim_first_token(
            conn, uuid.uuid4(), user_id, clock.now(), runtime.token_ttl
        )
    if claimed is not None:
        return presence.present(claimed)
    return await _take_place_locked(pool, clock, runtime, presence, user_id)


async def _take_place_locked(
    pool: AsyncConnectionPool,
    clock: Clock,
    runtime: QueueRuntime,
    presence: QueuePresence,
    user_id: uuid.UUID,
) -> Presented:
    """Issues serialise per user on an advisory lock, so two concurrent calls of
    one user yield one token; a partial unique index backs this up. A held
    token whose expiry passed but that the expiry job has not swept yet is
    expired here, and counted (inside the window or waiting), before the new
    one is issued.
    """
    changed: AdmissionState | None = None
    async with unit_of_work(pool, clock) as unit:
        await store.lock_fan_queue(unit, user_id)
        now = clock.now()
        lapsed = store.Lapsed()
        held = await store.find_live_token(unit.conn, user_id)
        if held is not None and held.expires_at > now:
            admitted = runtime.state.is_admitted(held.queue_number)
            token = await store.touch_token(
                unit, held.token_id, (user_id, held.queue_number), now, runtime.token_ttl, admitted
            )
            assert token is not None  # live and locked out from other issues of this user
        else:
            if held is not None and await store.end_token(unit, held.token_id, "expired", now):
                inside = runtime.state.is_admitted(held.queue_number)
                lapsed = store.Lapsed(admitted=int(inside), waiting=int(not inside))
            token = await store.insert_token(unit, uuid.uuid4(), user_id, now, runtime.token_ttl)
        if lapsed.total:
            changed = await store.add_completed(
                unit, now, lapsed_admitted=lapsed.admitted, lapsed_waiting=lapsed.waiting
            )
            await store.notify_change(unit, changed)
    if changed is not None:
        runtime.apply(changed)
    return presence.present(token)
