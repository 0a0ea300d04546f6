"""WatchQueueStatus: one message per change of position, ends on admission; fan-out cost."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from concert.v1 import admin_pb2, queue_pb2
from server.app import App, build_app
from server.clock import FakeClock
from server.config import Settings
from server.queue.expiry import JOB_NAME
from tests.queue.helpers import complete, issue_all
from tests.support import ADMIN, Stubs, bearer, error_details, eventually


async def test_a_watch_gets_each_change_and_ends_on_admission(app: App, stubs: Stubs) -> None:
    fans = await issue_all(app, stubs, 5)  # capacity 2: fans 3 and 4 wait ahead of fan 5
    stream = stubs.queue.WatchQueueStatus(
        queue_pb2.WatchQueueStatusRequest(), metadata=bearer(fans[4][1])
    )
    first = await stream.read()
    assert (first.status.people_ahead, first.status.state) == (
        2,
        queue_pb2.QUEUE_TOKEN_STATE_WAITING,
    )
    await eventually(lambda: app.queue.watcher_count == 1, "watch registered")
    seen = []
    for i in range(3):
        # Heard by NOTIFY in every process; the admission pass it triggers lets
        # the next fan in, and that change reaches the stream the same way.
        await complete(app, fans[i][1])
        message = await stream.read()
        seen.append((message.status.people_ahead, message.status.state))
    assert seen == [
        (1, queue_pb2.QUEUE_TOKEN_STATE_WAITING),
        (0, queue_pb2.QUEUE_TOKEN_STATE_WAITING),
        (0, queue_pb2.QUEUE_TOKEN_STATE_ADMITTED),
    ]
    assert await stream.read() == grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK
    assert app.queue.watcher_count == 0


async def test_pause_is_a_change_and_an_expired_watch_ends_with_token_expired(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 3)
    stream = stubs.queue.WatchQueueStatus(
        queue_pb2.WatchQueueStatusRequest(), metadata=bearer(fans[2][1])
    )
    first = await stream.read()
    assert (first.status.state, first.status.people_ahead) == (
        queue_pb2.QUEUE_TOKEN_STATE_WAITING,
        0,
    )
    await eventually(lambda: app.queue.watcher_count == 1, "watch registered")
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(paused=True), metadata=ADMIN)
    paused = await stream.read()
    assert paused.status.admission_paused and paused.status.people_ahead == 0
    # Nobody keeps the stream's token alive (the presence task runs every ttl/3 of
    # real time): past its expiry, the next change ends the stream.
    clock.advance(app.ctx.settings.token_ttl_seconds)
    await app.ctx.jobs.run_now(JOB_NAME)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stream.read()
    assert error_details(err.value).reason == "TOKEN_EXPIRED"


async def test_an_open_watch_keeps_its_token_alive(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 3)
    stream = stubs.queue.WatchQueueStatus(
        queue_pb2.WatchQueueStatusRequest(), metadata=bearer(fans[2][1])
    )
    await stream.read()
    await eventually(lambda: app.queue.watcher_count == 1, "watch registered")
    ttl = app.ctx.settings.token_ttl_seconds
    clock.advance(ttl * 2 / 3)
    assert await app.queue.touch_watchers() == 1  # what the presence task does
    clock.advance(ttl * 2 / 3)
    assert (await app.ctx.jobs.run_now(JOB_NAME)).result == 2  # fans 1 and 2 lapsed
    message = await stream.read()
    assert message.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    assert await stream.read() == grpc.aio.EOF


@pytest.mark.slow
async def test_many_watchers_cost_no_database_work_per_watcher(
    app: App, stubs: Stubs, settings: Settings
) -> None:
    watchers = 300
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(capacity=0), metadata=ADMIN)
    fans = await issue_all(app, stubs, watchers)
    # The line as the next second's read would have it: one taken while the
    # issues were still committing may miss a number drawn but not yet
    # committed, and count a fan behind it one place short until then.
    await app.queue.read_line()
    streams = [
        stubs.queue.WatchQueueStatus(queue_pb2.WatchQueueStatusRequest(), metadata=bearer(t))
        for _, t in fans
    ]
    firsts = await asyncio.gather(*(s.read() for s in streams))
    assert [m.status.people_ahead for m in firsts] == list(range(watchers))
    await eventually(lambda: app.queue.watcher_count == watchers, "all watches registered")

    runtime = app.queue
    requests_before = app.ctx.pool.get_stats().get("requests_num", 0)
    applied_before = runtime.changes_applied
    changes = 3
    for capacity in range(1, changes + 1):  # each change admits one more fan
        await stubs.admin.SetAdmission(
            admin_pb2.SetAdmissionRequest(capacity=capacity), metadata=ADMIN
        )
        messages = await asyncio.gather(*(s.read() for s in streams[capacity - 1 :]))
        # The fan let in (0 ahead, admitted), then every other fan one place closer.
        assert [m.status.people_ahead for m in messages] == [0, *range(watchers - capacity)]
    assert runtime.changes_applied - applied_before == changes
    # Database work for the whole fan-out: one SetAdmission per change, the
    # admission pass its raised capacity triggers (finding nothing left to do),
    # and the one admission record of each fan admitted; none per waiting watcher.
    requests = app.ctx.pool.get_stats().get("requests_num", 0) - requests_before
    assert requests <= 3 * changes, requests
    for stream in streams:
        stream.cancel()


async def test_another_process_learns_every_change_by_notify(
    app: App, stubs: Stubs, settings: Settings, clock: FakeClock, database_url: str
) -> None:
    """A second server on the same database: its watchers and gate follow our changes."""
    fans = await issue_all(app, stubs, 4)
    other = await build_app(settings, database_url=database_url, clock=clock, start_jobs=False)
    await other.start()
    try:
        async with grpc.aio.insecure_channel(other.address) as channel:
            remote = Stubs.on(channel)
            stream = remote.queue.WatchQueueStatus(
                queue_pb2.WatchQueueStatusRequest(), metadata=bearer(fans[3][1])
            )
            assert (await stream.read()).status.people_ahead == 1
            await eventually(lambda: other.queue.watcher_count == 1, "remote watch registered")
            await complete(app, fans[0][1])  # the pass it triggers lets fan 3 in
            assert (await stream.read()).status.people_ahead == 0
            await stubs.admin.SetAdmission(
                admin_pb2.SetAdmissionRequest(capacity=3), metadata=ADMIN
            )
            last = await stream.read()
            assert last.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
            assert other.queue.notifications >= 2
    finally:
        await other.stop(grace=0.5)
