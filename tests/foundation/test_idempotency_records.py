"""AIP-155 records: nothing in them is quick to reverse into a password, and they expire.

A SignUp's fingerprint used to be a SHA-256 of the request, password included:
one hash per guess recovered the password from a dump. Now secret fields are
left out of every fingerprint, the old SignUp rows are purged by migration
0006, and a job deletes records past CONCERT_IDEMPOTENCY_TTL_HOURS.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from concert.v1 import account_pb2
from server.app import App
from server.clock import FakeClock
from server.db import pruning
from server.db.migrate import migrate
from server.db.unit_of_work import fingerprint
from server.idempotency import PRUNE_JOB
from tests.support import Stubs


def _sign_up(password: str, email: str = "a@example.com") -> account_pb2.SignUpRequest:
    return account_pb2.SignUpRequest(email=email, password=password, request_id=str(uuid.uuid4()))


def test_the_fingerprint_of_a_sign_up_leaves_the_password_out() -> None:
    assert fingerprint(_sign_up("first password")) == fingerprint(_sign_up("second password"))
    assert fingerprint(_sign_up("same", "a@example.com")) != fingerprint(
        _sign_up("same", "b@example.com")
    )


async def test_a_stored_sign_up_holds_nothing_derived_from_the_password(
    app: App, stubs: Stubs
) -> None:
    request_id = str(uuid.uuid4())
    first = await stubs.account.SignUp(
        account_pb2.SignUpRequest(
            email="keep@example.com", password="the first password", request_id=request_id
        )
    )
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT fingerprint, response FROM idempotency_keys WHERE request_id = %s",
            (request_id,),
        )
        stored, response = await cursor.fetchone()  # type: ignore[misc]
    for guess in ("the first password", "anything else"):
        assert bytes(stored) == fingerprint(_sign_up(guess, "keep@example.com"))
    assert b"the first password" not in bytes(response)
    # A retry with another password is the same request: the first answer.
    again = await stubs.account.SignUp(
        account_pb2.SignUpRequest(
            email="keep@example.com", password="another password", request_id=request_id
        )
    )
    assert again == first


async def test_records_past_their_window_are_pruned(app: App, clock: FakeClock) -> None:
    ttl = timedelta(hours=app.ctx.settings.idempotency_ttl_hours)
    async with app.ctx.pool.connection() as conn:
        for age in (ttl + timedelta(minutes=1), ttl - timedelta(minutes=1)):
            await conn.execute(
                "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
                " VALUES ('test', %s, '\\x00', %s)",
                (uuid.uuid4(), clock.now() - age),
            )
    run = await app.ctx.jobs.run_now(PRUNE_JOB)
    assert run.result == 1
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM idempotency_keys WHERE scope = 'test'")
        assert await cursor.fetchone() == (1,)


async def test_one_run_prunes_more_than_a_batch(
    app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run deletes batch after batch until none is left (up to its bound), so the
    job keeps up with more records per interval than one batch holds."""
    monkeypatch.setattr(pruning, "BATCH", 100)
    monkeypatch.setattr(pruning, "MAX_BATCHES", 3)
    old = clock.now() - timedelta(hours=app.ctx.settings.idempotency_ttl_hours, minutes=1)
    async with app.ctx.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
            " SELECT 'test', gen_random_uuid(), '\\x00', %s FROM generate_series(1, 350)",
            (old,),
        )
    assert (await app.ctx.jobs.run_now(PRUNE_JOB)).result == 300  # three full batches
    assert (await app.ctx.jobs.run_now(PRUNE_JOB)).result == 50  # the rest, then a short one


async def test_migration_0006_purges_the_old_sign_up_records(create_database) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn, up_to=5)
        for scope in ("AccountService.SignUp", "PaymentService.Pay:someone"):
            await conn.execute(
                "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
                " VALUES (%s, %s, '\\x01', now())",
                (scope, uuid.uuid4()),
            )
        await migrate(conn)
        cursor = await conn.execute("SELECT scope FROM idempotency_keys")
        assert [row[0] for row in await cursor.fetchall()] == ["PaymentService.Pay:someone"]
