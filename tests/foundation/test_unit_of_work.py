"""The unit of work on real PostgreSQL: it commits, rolls back, checks the lock
order before anything is sent, and sends its last statement with the COMMIT."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from concert.v1 import wallet_pb2
from server.app import App
from server.db.unit_of_work import (
    Lock,
    LockKind,
    LockOrderError,
    RequestRecord,
    Statement,
    unit_of_work,
)


async def _count(pool: AsyncConnectionPool, marker: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM idempotency_keys WHERE scope = %s", (marker,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def _record(scope: str) -> RequestRecord[wallet_pb2.GetBalanceResponse]:
    request = wallet_pb2.GetBalanceRequest(user_id=str(uuid.uuid4()))
    return RequestRecord(scope, uuid.uuid4(), request, wallet_pb2.GetBalanceResponse)


async def test_a_lock_out_of_order_is_refused_before_it_is_sent_and_nothing_stays(
    app: App,
) -> None:
    pool, clock = app.ctx.pool, app.ctx.clock
    scope = f"test:{uuid.uuid4()}"
    with pytest.raises(LockOrderError):
        async with unit_of_work(pool, clock) as unit:
            assert await unit.replay(_record(scope)) is None  # written, then rolled back
            await unit.execute(
                "SELECT 1 FROM queue_state FOR UPDATE", locks=[Lock.of(LockKind.QUEUE_STATE)]
            )
            await unit.execute(
                "SELECT 1 FROM seats WHERE false FOR UPDATE", locks=[Lock.of(LockKind.SEAT, "x")]
            )
    assert await _count(pool, scope) == 0


async def test_the_body_commits_when_it_ends_and_rolls_back_when_it_raises(app: App) -> None:
    pool, clock = app.ctx.pool, app.ctx.clock
    kept, dropped = f"test:{uuid.uuid4()}", f"test:{uuid.uuid4()}"
    async with unit_of_work(pool, clock) as unit:
        await unit.replay(_record(kept))
    with pytest.raises(RuntimeError):
        async with unit_of_work(pool, clock) as unit:
            await unit.replay(_record(dropped))
            raise RuntimeError("the use case fails")
    assert (await _count(pool, kept), await _count(pool, dropped)) == (1, 0)


async def test_the_last_statement_carries_the_commit_and_ends_the_unit(app: App) -> None:
    pool, clock = app.ctx.pool, app.ctx.clock
    scope = f"test:{uuid.uuid4()}"
    async with unit_of_work(pool, clock) as unit:
        await unit.send(
            Statement(
                "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
                " VALUES (%(scope)s, %(id)s, '\\x00', now())",
                {"scope": scope, "id": uuid.uuid4()},
            ),
            commit=True,
        )
        assert unit.conn.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(RuntimeError, match="has committed"):
            await unit.execute("SELECT 1")
    assert await _count(pool, scope) == 1


async def test_a_replayed_request_gets_its_first_answer(app: App) -> None:
    pool, clock = app.ctx.pool, app.ctx.clock
    record = _record(f"test:{uuid.uuid4()}")
    first = wallet_pb2.GetBalanceResponse(balance=42)
    async with unit_of_work(pool, clock) as unit:
        assert await unit.replay(record) is None
        await unit.remember(record, first)
    async with unit_of_work(pool, clock) as unit:
        assert await unit.replay(record) == first


async def test_a_snapshot_unit_is_read_only(app: App) -> None:
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        async with unit_of_work(app.ctx.pool, app.ctx.clock, snapshot=True) as unit:
            await unit.execute("UPDATE queue_state SET paused = paused")
