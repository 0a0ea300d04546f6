"""The queue's gauges on /metrics follow the queue as fans arrive and pay."""

from __future__ import annotations

import pytest

from concert.v1 import admin_pb2, queue_pb2
from server.app import App
from server.config import Settings
from tests.fans import admitted_fan, new_fan
from tests.observability.scrape import scrape, value
from tests.support import ADMIN, Stubs


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(metrics_listen="127.0.0.1:0")


async def test_queue_gauges_report_issued_admitted_waiting_capacity_and_pause(
    app: App, stubs: Stubs
) -> None:
    assert app.metrics_port
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(capacity=2), metadata=ADMIN)
    for _ in range(2):
        await admitted_fan(stubs)
    waiting = await new_fan(stubs)
    await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=waiting.session_token))

    samples = await scrape(app.metrics_port)
    assert value(samples, "concert_queue_issued") == 3
    assert value(samples, "concert_queue_admitted") == 2
    assert value(samples, "concert_queue_waiting") == 1
    assert value(samples, "concert_queue_completed") == 0
    assert value(samples, "concert_queue_capacity") == 2
    assert value(samples, "concert_queue_paused") == 0

    stats = await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=ADMIN)
    assert (stats.issued_count, stats.admitted_count, stats.waiting_count) == (3, 2, 1)

    # Pausing the line shows on the next scrape (the ConcertQueueNotMoving alert reads it).
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(paused=True), metadata=ADMIN)
    assert value(await scrape(app.metrics_port), "concert_queue_paused") == 1
    await stubs.admin.SetAdmission(admin_pb2.SetAdmissionRequest(paused=False), metadata=ADMIN)
    assert value(await scrape(app.metrics_port), "concert_queue_paused") == 0
