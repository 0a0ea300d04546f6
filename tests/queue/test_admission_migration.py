"""Migration 0005: a queue from the old arithmetic converts without admitting anyone
twice or losing any fan's place, and then admits by the live line.

The old database is built by hand on the 0004 schema, in the state the old
arithmetic (window = completed_count + capacity) left it after the overflow:
capacity 2; fans 1 and 2 lapsed inside the window, fans 7 and 8 lapsed while
waiting, and all four were counted, so the window reached 6 and let in fans 3
to 6: four admitted fans for two places. Number 9 was drawn by an IssueToken
that rolled back (a hole); fan 10 waits.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg

from concert.v1 import admin_pb2, queue_pb2
from server.clock import FakeClock
from server.config import Settings
from server.db.migrate import migrate
from server.invariants import check_database
from server.queue.tokens import QueueToken, sign_queue_token
from tests.queue.helpers import admit_waiting, complete
from tests.support import ADMIN, Stubs, bearer, running_app

LAPSED_INSIDE, LIVE_INSIDE, LAPSED_WAITING, HOLE, WAITING = (1, 2), (3, 4, 5, 6), (7, 8), 9, 10


async def _old_queue(url: str, clock: FakeClock) -> dict[int, tuple[uuid.UUID, uuid.UUID]]:
    """The 0004 schema in the overflowed state; number -> (token id, user id) of live tokens."""
    now = clock.now()
    live: dict[int, tuple[uuid.UUID, uuid.UUID]] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn, up_to=4)
        await conn.execute(
            "INSERT INTO queue_state (id, completed_count, capacity, updated_at)"
            " VALUES (true, 4, 2, %s)",
            (now,),
        )
        for number in range(1, WAITING + 1):
            drawn = await (await conn.execute("SELECT nextval('queue_numbers')")).fetchone()
            assert drawn == (number,)
            if number == HOLE:
                continue
            user_id, token_id = uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "INSERT INTO users (id, email, password_hash, created_at) VALUES (%s, %s, 'x', %s)",
                (user_id, f"old-{number}@example.com", now),
            )
            ended = number in LAPSED_INSIDE + LAPSED_WAITING
            await conn.execute(
                "INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at,"
                " expires_at, ended_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    token_id,
                    user_id,
                    number,
                    "expired" if ended else "live",
                    now - timedelta(minutes=20),
                    now - timedelta(minutes=10) if ended else now + timedelta(minutes=10),
                    now - timedelta(minutes=10) if ended else None,
                ),
            )
            if not ended:
                live[number] = (token_id, user_id)
        await migrate(conn)
    return live


async def test_the_overflowed_old_window_converts_and_then_admits_by_the_live_line(
    create_database, settings: Settings, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    live = await _old_queue(url, clock)
    async with running_app(settings, url, clock) as app:
        import grpc

        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs.on(channel)
            tokens = {
                number: sign_queue_token(
                    app.ctx.signer,
                    QueueToken(token_id, user_id, number, clock.now() + timedelta(minutes=10)),
                )
                for number, (token_id, user_id) in live.items()
            }

            async def state_of(number: int) -> int:
                reply = await stubs.queue.GetQueueStatus(
                    queue_pb2.GetQueueStatusRequest(), metadata=bearer(tokens[number])
                )
                return int(reply.status.state)

            admitted_state = queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
            waiting_state = queue_pb2.QUEUE_TOKEN_STATE_WAITING
            # Nobody admitted loses it; nobody new is let in above capacity.
            await admit_waiting(app)
            assert [await state_of(n) for n in LIVE_INSIDE] == [admitted_state] * 4
            assert await state_of(WAITING) == waiting_state
            stats = await stubs.admin.GetQueueStats(
                admin_pb2.GetQueueStatsRequest(), metadata=ADMIN
            )
            assert (stats.window_end, stats.admitted_count, stats.waiting_count) == (6, 4, 1)
            assert (stats.lapsed_admitted_count, stats.lapsed_waiting_count) == (2, 2)
            assert stats.lost_number_count == 1  # the hole
            report = await check_database(url, clock.now(), expiry_grace=timedelta(seconds=60))
            assert report.ok, str(report)  # bounded: exempt until the window moves again

            # Two of the four pay: still two admitted, a full house; fan 10 waits.
            for number in LIVE_INSIDE[:2]:
                assert await complete(app, tokens[number])
            await admit_waiting(app)
            assert await state_of(WAITING) == waiting_state
            # A third pays: a place is free, and fan 10 comes in past the hole.
            assert await complete(app, tokens[LIVE_INSIDE[2]])
            await admit_waiting(app)
            assert await state_of(WAITING) == admitted_state
            report = await check_database(url, clock.now(), expiry_grace=timedelta(seconds=60))
            assert report.ok, str(report)
