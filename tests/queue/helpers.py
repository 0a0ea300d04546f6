"""Queue test helpers: users inserted in bulk, sessions signed directly (no KDF)."""

from __future__ import annotations

import uuid

from server.accounts.kdf import hash_password_blocking
from server.accounts.sessions import issue_session
from server.accounts.store import insert_user_with_wallet
from server.app import App
from server.db.unit_of_work import unit_of_work
from tests.support import eventually

PASSWORD = "correct horse battery"


async def insert_users(app: App, count: int) -> list[tuple[uuid.UUID, str, str]]:
    """count users straight into the database: (id, email, session token).

    Through the accounts' store, not SignUp, to save KDF time (the race under
    test is IssueToken): all share one (real) password hash, so password
    sign-in works for them too.
    """
    password_hash = hash_password_blocking(PASSWORD, 10)
    now = app.ctx.clock.now()
    users = [(uuid.uuid4(), f"bulk-{i}-{uuid.uuid4().hex[:8]}@example.com") for i in range(count)]
    async with unit_of_work(app.ctx.pool, app.ctx.clock) as unit:
        for user_id, email in users:
            assert await insert_user_with_wallet(unit.conn, user_id, email, password_hash, now)
    settings = app.ctx.settings
    return [
        (
            user_id,
            email,
            issue_session(app.ctx.signer, user_id, now, settings.session_ttl_seconds)[0],
        )
        for user_id, email in users
    ]


async def fetch_one(app: App, query: str, *params: object) -> tuple:
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
    assert row is not None
    return row


async def issue_all(app: App, stubs: object, count: int) -> list[tuple[uuid.UUID, str]]:
    """count fans in line, in order: (user id, queue token); numbers 1..count."""
    from concert.v1 import queue_pb2

    tokens = []
    for user_id, _, session in await insert_users(app, count):
        reply = await stubs.queue.IssueToken(  # type: ignore[attr-defined]
            queue_pb2.IssueTokenRequest(session_token=session)
        )
        tokens.append((user_id, reply.token))
    return tokens


async def settle(app: App, completed_count: int) -> None:
    """Wait until this process has learned (by NOTIFY) of the given completed_count."""
    await eventually(
        lambda: app.queue.state.completed_count >= completed_count,
        f"completed_count {completed_count} arriving by NOTIFY",
    )


async def admit_waiting(app: App) -> None:
    """Run the admission pass now, as the trigger or the next second's job would,
    and re-read the live line (people_ahead's source), as the next second would."""
    import asyncio

    from server.queue.admission_pass import JOB_NAME

    for _ in range(200):
        if (await app.ctx.jobs.run_now(JOB_NAME)).ran:
            break
        await asyncio.sleep(0.01)  # the trigger's pass holds the job's lock
    else:
        raise AssertionError("the admission pass never got its lock")
    await app.queue.refresh()


async def complete(app: App, token: str) -> bool:
    """Complete a token as a payment would, in its own transaction."""
    from server.db.unit_of_work import unit_of_work
    from server.queue.completion import complete_token
    from server.queue.tokens import read_queue_token

    claims = read_queue_token(app.ctx.signer, token)
    assert claims is not None
    async with unit_of_work(app.ctx.pool, app.ctx.clock) as unit:
        return await complete_token(unit, claims.token_id, app.ctx.clock.now())
