"""GetQueueStatus, RefreshToken, presence and the bounded active window."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from concert.v1 import admin_pb2, queue_pb2
from server.app import App
from server.clock import FakeClock
from server.queue.expiry import JOB_NAME
from server.queue.tokens import read_queue_token
from tests.queue.helpers import admit_waiting, complete, issue_all
from tests.support import ADMIN, Stubs, bearer, error_details, eventually


def expiry_of(app: App, token: str):  # type: ignore[no-untyped-def]
    claims = read_queue_token(app.ctx.signer, token)
    assert claims is not None
    return claims.expire_time


async def status(stubs: Stubs, token: str) -> queue_pb2.GetQueueStatusResponse:
    return await stubs.queue.GetQueueStatus(
        queue_pb2.GetQueueStatusRequest(), metadata=bearer(token)
    )


async def test_status_follows_the_counter_and_estimates_the_wait(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 6)  # capacity 2
    reply = await status(stubs, fans[5][1])
    # Fans 3, 4 and 5 wait ahead of fan 6.
    assert (reply.status.queue_number, reply.status.people_ahead) == (6, 3)
    assert reply.status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
    assert not reply.status.HasField("estimated_wait")  # no admission observed yet

    clock.advance(10)
    await complete(app, fans[0][1])
    await admit_waiting(app)
    clock.advance(10)
    await complete(app, fans[1][1])
    await admit_waiting(app)
    reply = await status(stubs, fans[5][1])
    assert reply.status.people_ahead == 1
    # Two admissions in 20 s observed: 1 ahead is about 10 s.
    wait = reply.status.estimated_wait.ToTimedelta()
    assert timedelta(seconds=5) <= wait <= timedelta(seconds=20)

    admitted = await status(stubs, fans[2][1])
    assert admitted.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    assert admitted.status.people_ahead == 0
    assert not admitted.status.HasField("estimated_wait")

    await heard_completion(app, fans[0][1])
    done = await status(stubs, fans[0][1])
    assert done.status.state == queue_pb2.QUEUE_TOKEN_STATE_COMPLETED


async def heard_completion(app: App, token: str) -> None:
    """Wait until this process has heard (by NOTIFY) that the token was completed."""
    claims = read_queue_token(app.ctx.signer, token)
    assert claims is not None
    await eventually(
        lambda: app.queue.is_completed(claims.token_id), "the completion arriving by NOTIFY"
    )


async def test_polls_are_answered_from_memory_until_the_expiry_should_move(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 4)  # capacity 2: fans 3 and 4 wait
    ttl = app.ctx.settings.token_ttl_seconds
    token = fans[3][1]
    pool = app.ctx.pool
    before = pool.get_stats().get("requests_num", 0)
    for _ in range(10):
        clock.advance(ttl * 0.05 / 10)
        reply = await status(stubs, token)
        assert reply.token == token  # nothing to extend yet: the same token
        assert (reply.status.state, reply.status.people_ahead) == (
            queue_pb2.QUEUE_TOKEN_STATE_WAITING,
            1,
        )
    assert pool.get_stats().get("requests_num", 0) == before

    # Past a tenth of the lifetime the poll extends the token in the database.
    clock.advance(ttl * 0.06)
    reply = await status(stubs, token)
    assert pool.get_stats().get("requests_num", 0) == before + 1
    assert expiry_of(app, reply.token) == clock.now() + timedelta(seconds=ttl)

    # A completion heard by NOTIFY sends the next poll to the row, which says COMPLETED.
    await complete(app, reply.token)
    await heard_completion(app, reply.token)
    done = await status(stubs, reply.token)
    assert done.status.state == queue_pb2.QUEUE_TOKEN_STATE_COMPLETED


async def test_presence_keeps_a_waiting_fan_in_line(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 3)
    ttl = app.ctx.settings.token_ttl_seconds
    token = fans[2][1]
    for _ in range(3):  # three lifetimes, present every half lifetime
        clock.advance(ttl / 2)
        reply = await status(stubs, token)
        token = reply.token
        assert expiry_of(app, token) == clock.now() + timedelta(seconds=ttl)
        assert (await app.ctx.jobs.run_now(JOB_NAME)).ran
        await admit_waiting(app)
    assert reply.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED  # 1 and 2 lapsed


async def test_refresh_extends_a_waiting_token_by_the_lifetime(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 3)
    clock.advance(100)
    reply = await stubs.queue.RefreshToken(
        queue_pb2.RefreshTokenRequest(), metadata=bearer(fans[2][1])
    )
    ttl = timedelta(seconds=app.ctx.settings.token_ttl_seconds)
    assert expiry_of(app, reply.token) == clock.now() + ttl
    assert reply.status.expire_time.ToDatetime().replace(tzinfo=clock.now().tzinfo) == (
        clock.now() + ttl
    )


async def test_an_admitted_fan_gets_a_bounded_active_window(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    [(_, token)] = await issue_all(app, stubs, 1)
    ttl = timedelta(seconds=app.ctx.settings.token_ttl_seconds)
    admitted_at = clock.now()
    first = await stubs.queue.RefreshToken(queue_pb2.RefreshTokenRequest(), metadata=bearer(token))
    assert expiry_of(app, first.token) == admitted_at + ttl
    for _ in range(3):
        clock.advance(ttl.total_seconds() / 4)
        reply = await stubs.queue.RefreshToken(
            queue_pb2.RefreshTokenRequest(), metadata=bearer(first.token)
        )
        assert expiry_of(app, reply.token) == admitted_at + ttl  # never beyond the window
    clock.advance(ttl.total_seconds() / 4)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.queue.RefreshToken(queue_pb2.RefreshTokenRequest(), metadata=bearer(token))
    details = error_details(err.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_refresh_and_status_errors(app: App, stubs: Stubs, clock: FakeClock) -> None:
    fans = await issue_all(app, stubs, 2)
    await complete(app, fans[0][1])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.queue.RefreshToken(queue_pb2.RefreshTokenRequest(), metadata=bearer(fans[0][1]))
    details = error_details(err.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOKEN_COMPLETED",
    )
    for method in (stubs.queue.GetQueueStatus, stubs.queue.RefreshToken):
        request = (
            queue_pb2.GetQueueStatusRequest()
            if method is stubs.queue.GetQueueStatus
            else queue_pb2.RefreshTokenRequest()
        )
        for metadata in ((), bearer("forged.token"), bearer(fans[1][1][:-3] + "abc")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(request, metadata=metadata)
            details = error_details(err.value)
            assert (details.code, details.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "TOKEN_INVALID",
            )
    clock.advance(app.ctx.settings.token_ttl_seconds)
    await app.ctx.jobs.run_now(JOB_NAME)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await status(stubs, fans[1][1])
    assert error_details(err.value).reason == "TOKEN_EXPIRED"


async def test_paused_status_reports_it_and_gives_no_estimate(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 4)
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(paused=True), metadata=ADMIN)
    reply = await status(stubs, fans[3][1])
    assert reply.status.admission_paused
    assert reply.status.people_ahead == 1
    assert not reply.status.HasField("estimated_wait")
