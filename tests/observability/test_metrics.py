"""The /metrics endpoint of a running server, scraped over HTTP after real calls."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concert.v1 import admin_pb2
from server.app import App, build_app
from server.config import Settings
from server.db.locks import LockNamespace, lock_id
from tests.conftest import empty_tables
from tests.observability.scrape import rpc, scrape, value
from tests.support import Stubs

ADMIN_STATS = ("concert.v1.AdminService", "GetQueueStats")
HEALTH_CHECK = ("grpc.health.v1.Health", "Check")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(metrics_listen="127.0.0.1:0")


async def test_calls_are_counted_by_the_status_code_the_caller_saw(
    app: App, channel: grpc.aio.Channel, stubs: Stubs
) -> None:
    assert app.metrics_port
    health = health_pb2_grpc.HealthStub(channel)
    await health.Check(health_pb2.HealthCheckRequest())
    await health.Check(health_pb2.HealthCheckRequest())
    with pytest.raises(grpc.aio.AioRpcError) as unknown_service:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown_service.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    wrong_key = (("authorization", "Bearer not-the-operator-key"),)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=wrong_key)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    samples = await scrape(app.metrics_port)
    handled = "grpc_server_handled_total"
    assert value(samples, handled, {**rpc(*HEALTH_CHECK), "grpc_code": "OK"}) == 2
    assert value(samples, handled, {**rpc(*HEALTH_CHECK), "grpc_code": "NOT_FOUND"}) == 1
    assert value(samples, handled, {**rpc(*ADMIN_STATS), "grpc_code": "UNAUTHENTICATED"}) == 1
    assert value(samples, handled, {**rpc(*ADMIN_STATS), "grpc_code": "PERMISSION_DENIED"}) == 1
    assert value(samples, handled, {**rpc(*ADMIN_STATS), "grpc_code": "OK"}) == 0
    assert value(samples, "grpc_server_started_total", rpc(*ADMIN_STATS)) == 2
    assert value(samples, "grpc_server_started_total", rpc(*HEALTH_CHECK)) == 3
    # The latency histogram saw every finished call, each below the +Inf bucket.
    assert value(samples, "grpc_server_handling_seconds_count", rpc(*ADMIN_STATS)) == 2
    assert value(samples, "grpc_server_handling_seconds_count", rpc(*HEALTH_CHECK)) == 3
    assert (
        value(samples, "grpc_server_handling_seconds_bucket", {**rpc(*ADMIN_STATS), "le": "+Inf"})
        == 2
    )
    assert value(samples, "grpc_server_handling_seconds_sum", rpc(*ADMIN_STATS)) > 0

    # A later scrape sees later calls: the counters move.
    await health.Check(health_pb2.HealthCheckRequest())
    later = await scrape(app.metrics_port)
    assert value(later, handled, {**rpc(*HEALTH_CHECK), "grpc_code": "OK"}) == 3


async def test_pool_usage_and_process_metrics_are_exposed(app: App, settings: Settings) -> None:
    assert app.metrics_port
    async with app.ctx.pool.connection() as conn:
        await conn.execute("SELECT 1")
        held = await scrape(app.metrics_port)
    pool = {"pool": "concert"}
    assert value(held, "concert_db_pool_max_connections", pool) == settings.pool_max_size
    assert value(held, "concert_db_pool_min_connections", pool) == settings.pool_min_size
    size = value(held, "concert_db_pool_size_connections", pool)
    available = value(held, "concert_db_pool_available_connections", pool)
    assert size >= settings.pool_min_size
    assert available <= size - 1  # the connection held above is not available
    assert value(held, "concert_db_pool_requests_total", pool) >= 1
    assert ("concert_db_pool_requests_waiting", frozenset(pool.items())) in held
    assert value(held, "process_resident_memory_bytes") > 0


async def test_job_runs_and_durations_are_counted(app: App, database_url: str) -> None:
    assert app.metrics_port

    async def probe(conn: psycopg.AsyncConnection) -> int:
        await conn.execute("SELECT 1")
        return 1

    app.ctx.jobs.add("metrics_probe", probe, interval_seconds=3600)
    assert (await app.ctx.jobs.run_now("metrics_probe")).ran
    assert (await app.ctx.jobs.run_now("metrics_probe")).ran
    # Another process holding the job's lock: this process skips the run.
    key = (int(LockNamespace.JOBS), lock_id("metrics_probe"))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s, %s)", key)
        assert not (await app.ctx.jobs.run_now("metrics_probe")).ran

    samples = await scrape(app.metrics_port)
    job = {"job_name": "metrics_probe"}
    assert value(samples, "concert_job_runs_total", {**job, "outcome": "ran"}) == 2
    assert value(samples, "concert_job_runs_total", {**job, "outcome": "skipped"}) == 1
    assert value(samples, "concert_job_duration_seconds_count", job) == 2
    assert value(samples, "concert_job_last_run_timestamp_seconds", job) > 0


async def test_features_publish_gauges_read_at_scrape_time(app: App) -> None:
    assert app.metrics_port
    waiting = [5]

    async def read_from_database() -> dict[str, float]:
        async with app.ctx.pool.connection() as conn:
            cursor = await conn.execute("SELECT 40 + 2, 7")
            row = await cursor.fetchone()
        assert row is not None
        return {"test_queue_issued": row[0], "test_queue_admitted": row[1]}

    async def broken() -> float:
        raise RuntimeError("the reader failed")

    metrics = app.ctx.metrics
    metrics.register_gauges(
        {"test_queue_issued": "tokens issued", "test_queue_admitted": "tokens admitted"},
        read_from_database,
    )
    metrics.register_gauge_callback("test_queue_waiting", "tokens waiting", lambda: waiting[0])
    metrics.register_gauge_callback("test_broken", "a reader that fails", broken)
    with pytest.raises(ValueError):
        metrics.register_gauge_callback("test_queue_waiting", "taken twice", lambda: 1.0)

    samples = await scrape(app.metrics_port)
    assert value(samples, "test_queue_issued") == 42
    assert value(samples, "test_queue_admitted") == 7
    assert value(samples, "test_queue_waiting") == 5
    assert ("test_broken", frozenset()) not in samples  # left out, the rest still served

    waiting[0] = 3
    assert value(await scrape(app.metrics_port), "test_queue_waiting") == 3


async def test_the_endpoint_opens_on_start_and_closes_on_stop(
    database_url: str, settings: Settings
) -> None:
    await empty_tables(database_url)
    application = await build_app(settings, database_url=database_url, start_jobs=False)
    assert application.metrics_port is None  # built, not started
    await application.start()
    try:
        port = application.metrics_port
        assert port
        assert value(await scrape(port), "concert_db_pool_max_connections", {"pool": "concert"})
    finally:
        await application.stop(grace=0.1)

    def fetch() -> None:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)

    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(fetch)


async def test_no_endpoint_unless_configured(database_url: str, settings: Settings) -> None:
    await empty_tables(database_url)
    plain = settings.replace(metrics_listen=None)
    application = await build_app(plain, database_url=database_url, start_jobs=False)
    await application.start()
    try:
        assert application.metrics_port is None
    finally:
        await application.stop(grace=0.1)


async def test_a_held_event_loop_shows_in_the_loop_lag(app: App) -> None:
    """A step that holds the loop 300 ms makes the sampler wake at least 200 ms late."""
    assert app.metrics_port
    before = await scrape(app.metrics_port)
    late = ("concert_event_loop_lag_seconds_bucket", {"le": "0.1"})
    time.sleep(0.3)  # noqa: ASYNC251 - holding the loop is the point: a CPU-bound step
    await asyncio.sleep(0.25)  # the sampler's next wake, recorded
    after = await scrape(app.metrics_port)
    count = "concert_event_loop_lag_seconds_count"
    assert value(after, count) > value(before, count)
    stalled = (value(after, count) - value(after, *late)) - (
        value(before, count) - value(before, *late)
    )
    assert stalled >= 1
