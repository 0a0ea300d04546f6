"""A database crash mid-sale: the sequence jumps, the line keeps moving.

PostgreSQL WAL-logs a sequence 32 values ahead, so a crash (or a failover, or an
immediate shutdown) skips up to 32 queue numbers. Under the old arithmetic those
numbers each kept a place inside the window forever; here, on a cluster the test
owns and kills with SIGKILL, the fans after the jump come in, in order, as soon
as places free up, and again after the server itself restarts (its admission
state rebuilt from the database alone).
"""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest

from concert.v1 import admin_pb2, queue_pb2
from server.app import App
from server.clock import FakeClock
from server.config import Settings
from server.db.migrate import migrate
from tests.clusters import kill_postgres, own_cluster
from tests.queue.helpers import admit_waiting, complete, insert_users
from tests.reliability.helpers import assert_invariants
from tests.support import ADMIN, Stubs, bearer, running_app

pytestmark = pytest.mark.slow

ADMITTED = queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
WAITING = queue_pb2.QUEUE_TOKEN_STATE_WAITING


async def _issue(app: App, stubs: Stubs, count: int) -> list[tuple[int, str]]:
    """count new fans take a place, retrying while the database comes back."""
    taken = []
    for _, _, session in await _retrying(lambda: insert_users(app, count)):
        request = queue_pb2.IssueTokenRequest(session_token=session)
        reply = await _retrying(lambda r=request: stubs.queue.IssueToken(r))  # type: ignore[misc]
        taken.append((reply.status.queue_number, reply.token))
    return taken


async def _retrying(call):  # type: ignore[no-untyped-def]
    for _ in range(100):
        try:
            return await call()
        except (grpc.aio.AioRpcError, psycopg.OperationalError):
            await asyncio.sleep(0.2)
    raise AssertionError("the database never came back")


async def _states(stubs: Stubs, fans: list[tuple[int, str]]) -> list[int]:
    replies = [
        await stubs.queue.GetQueueStatus(queue_pb2.GetQueueStatusRequest(), metadata=bearer(t))
        for _, t in fans
    ]
    return [int(r.status.state) for r in replies]


async def _pay_one_by_one_and_watch_the_next_come_in(
    app: App, stubs: Stubs, inside: list[tuple[int, str]], waiting: list[tuple[int, str]]
) -> None:
    for paid, (_, token) in enumerate(inside, start=1):
        assert await _retrying(lambda t=token: complete(app, t))  # type: ignore[misc]
        await admit_waiting(app)
        assert await _states(stubs, waiting) == [ADMITTED] * paid + [WAITING] * (
            len(waiting) - paid
        )


async def test_fans_after_the_sequence_jump_are_admitted_in_order(
    settings: Settings, clock: FakeClock
) -> None:
    with own_cluster() as cluster:
        async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
            await migrate(conn)
        async with (
            running_app(settings, cluster.url, clock) as app,
            grpc.aio.insecure_channel(app.address) as channel,
        ):
            stubs = Stubs.on(channel)
            await stubs.admin.SetAdmission(
                admin_pb2.SetAdmissionRequest(capacity=3), metadata=ADMIN
            )
            first = await _issue(app, stubs, 3)
            assert [n for n, _ in first] == [1, 2, 3]

            kill_postgres(cluster.pgdata)
            cluster.start()  # crash recovery, by itself
            after_crash = await _issue(app, stubs, 3)
            numbers = [n for n, _ in after_crash]
            assert numbers[0] > 4, numbers  # the sequence jumped
            assert numbers == list(range(numbers[0], numbers[0] + 3))
            assert await _states(stubs, after_crash) == [WAITING] * 3
            await _pay_one_by_one_and_watch_the_next_come_in(app, stubs, first, after_crash)
            await assert_invariants(app)

        # The server restarts: its admission state comes from the database alone.
        async with (
            running_app(settings, cluster.url, clock) as app,
            grpc.aio.insecure_channel(app.address) as channel,
        ):
            stubs = Stubs.on(channel)
            later = await _issue(app, stubs, 3)
            assert await _states(stubs, later) == [WAITING] * 3
            await _pay_one_by_one_and_watch_the_next_come_in(app, stubs, after_crash, later)
            stats = await stubs.admin.GetQueueStats(
                admin_pb2.GetQueueStatsRequest(), metadata=ADMIN
            )
            assert stats.lost_number_count == numbers[0] - 4
            assert (stats.admitted_count, stats.completed_by_payment_count) == (3, 6)
            await assert_invariants(app)
