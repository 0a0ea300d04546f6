"""IssueToken: atomic numbers, one place per fan, every credential error."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import psycopg
import pytest

from concert.v1 import admin_pb2, queue_pb2
from server.accounts.sessions import issue_session
from server.app import App
from server.clock import FakeClock
from server.db.locks import LockNamespace, lock_id
from server.invariants import check_database
from server.queue import store
from server.queue.tokens import read_queue_token
from tests.queue.helpers import PASSWORD, admit_waiting, fetch_one, insert_users
from tests.support import ADMIN, Stubs, bearer, error_details


def by_session(token: str) -> queue_pb2.IssueTokenRequest:
    return queue_pb2.IssueTokenRequest(session_token=token)


def by_password(email: str, password: str) -> queue_pb2.IssueTokenRequest:
    return queue_pb2.IssueTokenRequest(
        password=queue_pb2.PasswordCredential(email=email, password=password)
    )


@pytest.mark.slow
async def test_a_thousand_concurrent_issues_get_distinct_consecutive_numbers(app: App) -> None:
    users = await insert_users(app, 1000)
    # Four client connections, like many fans' devices; all 1,000 calls in flight at once.
    channels = [grpc.aio.insecure_channel(app.address) for _ in range(4)]
    try:
        clients = [Stubs.on(channel) for channel in channels]
        replies = await asyncio.gather(
            *(
                clients[i % len(clients)].queue.IssueToken(by_session(session))
                for i, (_, _, session) in enumerate(users)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    numbers = [r.status.queue_number for r in replies]
    assert sorted(numbers) == list(range(1, len(users) + 1))
    claims = [read_queue_token(app.ctx.signer, r.token) for r in replies]
    assert [c.user_id if c else None for c in claims] == [u for u, _, _ in users]
    assert await fetch_one(
        app, "SELECT count(*), count(DISTINCT user_id), max(queue_number) FROM queue_tokens"
    ) == (len(users), len(users), len(users))


async def test_the_same_fan_twice_at_once_gets_one_token(app: App, stubs: Stubs) -> None:
    [(user_id, email, session)] = await insert_users(app, 1)
    requests = [by_session(session)] * 10 + [by_password(email, PASSWORD)] * 2
    replies = await asyncio.gather(*(stubs.queue.IssueToken(r) for r in requests))
    assert {r.status.queue_number for r in replies} == {1}
    ids = {read_queue_token(app.ctx.signer, r.token).token_id for r in replies}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert await fetch_one(
        app, "SELECT count(*) FROM queue_tokens WHERE user_id = %s", user_id
    ) == (1,)


async def test_issue_replies_with_number_people_ahead_and_expiry(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    users = await insert_users(app, 4)  # capacity is 2 in these tests
    replies = [await stubs.queue.IssueToken(by_session(s)) for _, _, s in users]
    states = [(r.status.queue_number, r.status.people_ahead, r.status.state) for r in replies]
    assert states == [
        (1, 0, queue_pb2.QUEUE_TOKEN_STATE_ADMITTED),
        (2, 0, queue_pb2.QUEUE_TOKEN_STATE_ADMITTED),
        (3, 0, queue_pb2.QUEUE_TOKEN_STATE_WAITING),
        (4, 1, queue_pb2.QUEUE_TOKEN_STATE_WAITING),
    ]
    expire = replies[0].status.expire_time.ToDatetime().replace(tzinfo=clock.now().tzinfo)
    assert (expire - clock.now()).total_seconds() == app.ctx.settings.token_ttl_seconds
    claims = read_queue_token(app.ctx.signer, replies[0].token)
    assert claims is not None and claims.expire_time == expire


async def test_unknown_email_and_wrong_password_are_the_same_error(app: App, stubs: Stubs) -> None:
    [(_, email, _)] = await insert_users(app, 1)
    seen = []
    for request in (by_password(email, "wrong password"), by_password("no@such.fan", PASSWORD)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.queue.IssueToken(request)
        details = error_details(err.value)
        seen.append((details.code, details.reason, details.message))
    assert seen[0] == seen[1]
    assert seen[0][:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_forged_or_expired_session_is_invalid_credentials(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    [(user_id, _, session)] = await insert_users(app, 1)
    forged = session[:-4] + ("AAAA" if not session.endswith("AAAA") else "BBBB")
    expired = issue_session(app.ctx.signer, user_id, clock.now(), -1)[0]
    for credential in (forged, expired, "not.a-token", "x"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.queue.IssueToken(by_session(credential))
        details = error_details(err.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        ), credential


@pytest.mark.parametrize(
    ("request_", "bad"),
    [
        (queue_pb2.IssueTokenRequest(), {"credential"}),
        (by_password("", ""), {"password.email", "password.password"}),
        (by_password("a@b.co", "p" * 200), {"password.password"}),
        (by_session("s" * 3000), {"session_token"}),
    ],
)
async def test_issue_validates_its_credential(
    stubs: Stubs, request_: queue_pb2.IssueTokenRequest, bad: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.queue.IssueToken(request_)
    details = error_details(err.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == bad


async def test_after_expiry_a_fan_gets_a_new_place_and_the_old_one_counts_once(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    [(_, _, session)] = await insert_users(app, 1)
    first = await stubs.queue.IssueToken(by_session(session))
    clock.advance(app.ctx.settings.token_ttl_seconds)
    # Expired but not yet swept by the job: the issue ends it and counts it.
    second = await stubs.queue.IssueToken(by_session(session))
    assert (first.status.queue_number, second.status.queue_number) == (1, 2)
    assert await fetch_one(app, "SELECT state FROM queue_tokens WHERE queue_number = 1") == (
        "expired",
    )
    assert app.queue.state.completed_count == 1
    run = await app.ctx.jobs.run_now("queue.expire_stale_tokens")
    assert run.result == 0
    assert await fetch_one(app, "SELECT completed_count FROM queue_state") == (1,)


async def test_a_number_drawn_in_a_lost_race_is_lost_and_takes_no_place(
    app: App, stubs: Stubs, database_url: str, clock: FakeClock
) -> None:
    """The one case the single-statement issue cannot avoid drawing a number for
    nothing: another issue of the same fan commits after the statement's
    snapshot. Planted here with a second connection that inserts the fan's
    token (uncommitted, so the statement draws a number and then waits on the
    one-live-token index) and commits. The drawn number is lost, like one a
    rolled-back issue drew: nobody holds it, and it must take no place."""
    [(user_id, _, session), (_, _, later_session)] = await insert_users(app, 2)
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        await other.execute(
            "INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at)"
            " VALUES (%s, %s, nextval('queue_numbers'), 'live', %s, %s)",
            (uuid.uuid4(), user_id, clock.now(), clock.now() + timedelta(minutes=10)),
        )
        issuing = asyncio.ensure_future(stubs.queue.IssueToken(by_session(session)))
        await wait_for_lock_wait(other)
        await other.commit()
        reply = await issuing
    # The fan gets the token the other issue committed (number 1); number 2 was
    # drawn for nothing.
    assert reply.status.queue_number == 1
    assert await fetch_one(
        app, "SELECT count(*) FROM queue_tokens WHERE user_id = %s AND state = 'live'", user_id
    ) == (1,)
    stats = await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=ADMIN)
    assert (stats.issued_count, stats.lost_number_count, stats.completed_count) == (1, 1, 0)
    report = await check_database(database_url, clock.now(), expiry_grace=timedelta(seconds=60))
    assert report.ok, str(report)
    # Capacity 2, the window reaching numbers 1 and 2: number 3 waits only until
    # the next pass, which counts one live fan inside and lets 3 in.
    later = await stubs.queue.IssueToken(by_session(later_session))
    assert later.status.queue_number == 3
    await admit_waiting(app)
    status = await stubs.queue.GetQueueStatus(
        queue_pb2.GetQueueStatusRequest(), metadata=bearer(later.token)
    )
    assert status.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED


async def wait_for_lock_wait(conn: psycopg.AsyncConnection) -> None:
    """Until some other session of this database waits on a lock held by conn's."""
    for _ in range(500):
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND %s = ANY(pg_blocking_pids(pid))",
            (conn.info.backend_pid,),
        )
        row = await cursor.fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no session ever waited on the planted token")


async def test_the_single_statement_issue_inserts_only_for_a_fan_without_a_live_token(
    app: App, database_url: str, clock: FakeClock
) -> None:
    """store.claim_first_token, the one-round-trip path: a new token for a fan with
    none; nothing (and no number drawn) when the fan has one, or while another
    issue of the fan holds its lock; the locked path then decides."""
    [(user_id, _, _), (busy_user, _, _)] = await insert_users(app, 2)
    ttl = app.queue.token_ttl
    async with app.ctx.pool.connection() as conn:
        first = await store.claim_first_token(conn, uuid.uuid4(), user_id, clock.now(), ttl)
        assert first is not None
        assert (first.user_id, first.queue_number) == (user_id, 1)
        again = await store.claim_first_token(conn, uuid.uuid4(), user_id, clock.now(), ttl)
        assert again is None
        async with await psycopg.AsyncConnection.connect(database_url) as other:
            await other.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (int(LockNamespace.QUEUE_FAN), lock_id(str(busy_user))),
            )
            busy = await store.claim_first_token(conn, uuid.uuid4(), busy_user, clock.now(), ttl)
            assert busy is None
    # No number was drawn by the two refusals: the next one is 2.
    assert await fetch_one(app, "SELECT nextval('queue_numbers')") == (2,)
