"""Admission by the live line: holes and lapsed waiting tokens take no place.

The old arithmetic (window = completed + capacity) froze behind a number nobody
holds and overflowed when waiting fans left; these are those two cases, through
the public API and real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import grpc
import psycopg
import pytest

from concert.v1 import admin_pb2, queue_pb2
from server.app import App
from server.clock import FakeClock
from server.config import Settings
from server.queue.expiry import JOB_NAME as EXPIRY_JOB
from tests.queue.helpers import admit_waiting, complete, insert_users, issue_all
from tests.reliability.helpers import assert_invariants
from tests.support import ADMIN, Stubs, bearer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A short lock_timeout: the rollback test waits it out once.
    return settings.replace(lock_timeout_ms=300)


async def _state(stubs: Stubs, token: str) -> int:
    reply = await stubs.queue.GetQueueStatus(
        queue_pb2.GetQueueStatusRequest(), metadata=bearer(token)
    )
    return int(reply.status.state)


async def _stats(stubs: Stubs) -> admin_pb2.GetQueueStatsResponse:
    return await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=ADMIN)


async def _set_capacity(stubs: Stubs, capacity: int) -> None:
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(capacity=capacity), metadata=ADMIN)


async def _lapse(app: App, numbers: list[int]) -> None:
    """These fans closed the app: their tokens' expiry is now past."""
    async with app.ctx.pool.connection() as conn:
        await conn.execute(
            "UPDATE queue_tokens SET expires_at = %s WHERE queue_number = ANY(%s)",
            (app.ctx.clock.now() - timedelta(seconds=1), numbers),
        )


async def test_an_issue_rolled_back_after_drawing_its_number_leaves_no_stuck_place(
    app: App, stubs: Stubs, database_url: str
) -> None:
    await _set_capacity(stubs, 1)
    fans = await issue_all(app, stubs, 2)  # fan 1 in, fan 2 waits
    [(_, _, session_b)] = await insert_users(app, 1)
    # Fan 2's token lapses; its re-issue takes the locked path, expires the old
    # token, draws number 3, and then cannot count the lapse: the queue_state
    # row is locked elsewhere past lock_timeout. The issue rolls back; number 3
    # is drawn and held by nobody.
    await _lapse(app, [2])
    session_2 = await _session_of(app, fans[1][0])
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        await blocker.execute("SELECT 1 FROM queue_state FOR UPDATE")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=session_2))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await blocker.rollback()
    stats = await _stats(stubs)
    assert stats.lost_number_count == 1

    # Fan 1 pays: one place free. The next fan (number 4) gets it, past the hole.
    assert await complete(app, fans[0][1])
    later = await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=session_b))
    assert later.status.queue_number == 4
    await admit_waiting(app)
    assert await _state(stubs, later.token) == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    await assert_invariants(app)


async def _session_of(app: App, user_id: object) -> str:
    from server.accounts.sessions import issue_session

    settings = app.ctx.settings
    return issue_session(
        app.ctx.signer, user_id, app.ctx.clock.now(), settings.session_ttl_seconds
    )[0]


async def test_waiting_fans_who_leave_do_not_widen_the_window(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    """The issue's measurement: capacity 5, sixty in line; the five admitted fans'
    windows end and ten waiting fans further back leave. Afterwards exactly five
    are admitted (the old arithmetic let in fifteen), and they are 6 to 10."""
    await _set_capacity(stubs, 5)
    fans = await issue_all(app, stubs, 60)
    await _lapse(app, [1, 2, 3, 4, 5, *range(20, 30)])
    await app.ctx.jobs.run_now(EXPIRY_JOB)
    await admit_waiting(app)
    stats = await _stats(stubs)
    assert (stats.admitted_count, stats.lapsed_admitted_count, stats.lapsed_waiting_count) == (
        5,
        5,
        10,
    )
    admitted = queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    states = [await _state(stubs, token) for _, token in fans[5:11]]
    assert states == [admitted] * 5 + [queue_pb2.QUEUE_TOKEN_STATE_WAITING]
    # Fan 40 waits behind live fans only: 11..19 and 30..39 (20..29 left): 19.
    await app.queue.read_line()
    reply = await stubs.queue.GetQueueStatus(
        queue_pb2.GetQueueStatusRequest(), metadata=bearer(fans[39][1])
    )
    assert reply.status.people_ahead == 19
    await assert_invariants(app)


async def test_admitted_never_exceeds_capacity_while_fans_come_pay_and_leave(
    app: App, stubs: Stubs, database_url: str
) -> None:
    """Sampled from another connection while issues, payments, lapses, expiry runs
    and admission passes race: live admitted tokens never exceed the capacity."""
    capacity = 4
    await _set_capacity(stubs, capacity)
    users = await insert_users(app, 80)
    samples: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                cursor = await conn.execute(
                    "SELECT count(*) FROM queue_tokens t, queue_state q WHERE t.state = 'live'"
                    " AND t.expires_at > %s AND t.queue_number <= q.window_limit",
                    (app.ctx.clock.now(),),
                )
                row = await cursor.fetchone()
                assert row is not None
                samples.append(int(row[0]))
                await asyncio.sleep(0.002)

    async def fan(session: str, index: int) -> None:
        reply = await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=session))
        for _ in range(200):
            if await _state(stubs, reply.token) == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED:
                break
            if index % 5 == 0:  # every fifth fan gives up while waiting
                await _lapse(app, [reply.status.queue_number])
                return
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("never admitted")
        if index % 7 == 0:  # some admitted fans never pay
            await _lapse(app, [reply.status.queue_number])
            return
        await complete(app, reply.token)

    async def passes() -> None:
        while not stop.is_set():
            await app.ctx.jobs.run_now(EXPIRY_JOB)
            await app.ctx.jobs.run_now("queue.admit_waiting")
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    passer = asyncio.create_task(passes())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(fan(s, i) for i, (_, _, s) in enumerate(users))), timeout=120
        )
    finally:
        stop.set()
        for task in (sampler, passer):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert samples and max(samples) <= capacity, max(samples)
    stats = await _stats(stubs)
    assert stats.issued_count == 80 and stats.admitted_count == 0 and stats.waiting_count == 0
    await app.ctx.jobs.run_now(EXPIRY_JOB)
    await assert_invariants(app)


async def test_an_admitted_fan_who_lapses_frees_the_place_before_the_expiry_job(
    app: App, stubs: Stubs
) -> None:
    """A lapsed token holds no place: the pass counts it out at once, not a
    CONCERT_EXPIRY_INTERVAL_SECONDS later when the job marks it expired."""
    fans = await issue_all(app, stubs, 3)  # capacity 2: fans 1 and 2 in, fan 3 waits
    await _lapse(app, [1])
    await admit_waiting(app)
    assert await _state(stubs, fans[2][1]) == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    await assert_invariants(app)
