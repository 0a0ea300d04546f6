"""AdminService.SetAdmission and GetQueueStats."""

from __future__ import annotations

import grpc
import pytest

from concert.v1 import admin_pb2, concert_pb2, queue_pb2
from server.app import App
from server.clock import FakeClock
from server.queue.expiry import JOB_NAME
from tests.queue.helpers import admit_waiting, complete, fetch_one, issue_all
from tests.support import ADMIN, Stubs, bearer, error_details


async def stats(stubs: Stubs) -> admin_pb2.GetQueueStatsResponse:
    return await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=ADMIN)


async def admitted(stubs: Stubs, token: str) -> bool:
    try:
        await stubs.concert.ListConcerts(concert_pb2.ListConcertsRequest(), metadata=bearer(token))
    except grpc.aio.AioRpcError as err:
        assert error_details(err).reason == "QUEUE_NOT_ADMITTED"
        return False
    return True


async def test_capacity_defaults_from_settings_and_set_admission_changes_it(
    app: App, stubs: Stubs
) -> None:
    fans = await issue_all(app, stubs, 5)
    assert (await stats(stubs)).capacity == 2
    reply = await stubs.admin.SetAdmission(
        admin_pb2.SetAdmissionRequest(capacity=4), metadata=ADMIN
    )
    assert (reply.capacity, reply.paused) == (4, False)
    assert await fetch_one(app, "SELECT capacity FROM queue_state") == (4,)
    assert [await admitted(stubs, t) for _, t in fans] == [True] * 4 + [False]


async def test_pause_freezes_the_window_and_resume_catches_up(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 5)
    reply = await stubs.admin.SetAdmission(
        admin_pb2.SetAdmissionRequest(paused=True), metadata=ADMIN
    )
    assert reply.paused and reply.capacity == 2
    await complete(app, fans[0][1])
    await complete(app, fans[1][1])
    await app.queue.refresh()
    # Completions do not move a paused window; those inside stay inside.
    assert not await admitted(stubs, fans[2][1])
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(capacity=3), metadata=ADMIN)
    assert not await admitted(stubs, fans[2][1])  # capacity applies on resume
    reply = await stubs.admin.SetAdmission(
        admin_pb2.SetAdmissionRequest(paused=False), metadata=ADMIN
    )
    assert (reply.paused, reply.capacity) == (False, 3)
    assert [await admitted(stubs, t) for _, t in fans[2:]] == [True, True, True]


async def test_set_admission_validates_capacity(stubs: Stubs) -> None:
    for capacity in (-1, 1_000_001):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.admin.SetAdmission(
                admin_pb2.SetAdmissionRequest(capacity=capacity), metadata=ADMIN
            )
        details = error_details(err.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.bad_fields == {"capacity"}


async def test_queue_stats_count_every_kind_of_token(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 6)
    assert (await stats(stubs)) == admin_pb2.GetQueueStatsResponse(
        issued_count=6, admitted_count=2, waiting_count=4, capacity=2, window_end=2
    )
    await complete(app, fans[0][1])  # fan 1 pays; the pass lets fan 3 in
    await admit_waiting(app)
    clock.advance(app.ctx.settings.token_ttl_seconds - 1)
    await stubs.queue.RefreshToken(
        queue_pb2.RefreshTokenRequest(),
        metadata=bearer(fans[5][1]),
    )
    clock.advance(1)
    # Fans 2 and 3 lapse inside the window, 4 and 5 while waiting; fan 6 is in line.
    await app.ctx.jobs.run_now(JOB_NAME)
    await admit_waiting(app)  # fan 6 in, and one place left for whoever comes next
    assert (await stats(stubs)) == admin_pb2.GetQueueStatsResponse(
        issued_count=6,
        completed_count=5,
        admitted_count=1,
        waiting_count=0,
        capacity=2,
        completed_by_payment_count=1,
        lapsed_admitted_count=2,
        lapsed_waiting_count=2,
        window_end=7,
    )
