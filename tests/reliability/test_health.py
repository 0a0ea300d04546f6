"""Health that means the right thing: liveness is the process, readiness adds the database.

On a PostgreSQL of the test's own, stopped for a minute under a running server:
liveness stays SERVING the whole time (a probe that restarted every pod would
not bring the database back), readiness turns NOT_SERVING, and is SERVING again
once the database returns, with no restart. Checked on the plaintext health
port (CONCERT_HEALTH_LISTEN), the one the manifests' probes use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tests.clusters
from server.app import LIVENESS, READINESS, App
from server.clock import FakeClock
from server.config import Settings
from server.db.embedded import EmbeddedCluster
from server.db.migrate import migrate
from tests.support import running_app

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OUTAGE_SECONDS = 60


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    with tests.clusters.own_cluster() as cluster:
        yield cluster


async def _status(target: str, service: str) -> int | None:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.aio.AioRpcError:
            return None
    return int(reply.status)


async def _until(target: str, service: str, status: int, seconds: float = 30) -> None:
    for _ in range(int(seconds * 4)):
        if await _status(target, service) == status:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{service} never became {status}")


@contextlib.asynccontextmanager
async def _served_with_a_health_port(
    cluster: EmbeddedCluster, settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[App, str]]:
    """A server on the cluster, with its plaintext health port; and that port's address."""
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        await migrate(conn)
    async with running_app(
        settings.replace(health_listen="127.0.0.1:0"), cluster.url, clock
    ) as app:
        yield app, f"127.0.0.1:{app.health_port}"


async def test_a_database_outage_is_not_ready_but_alive_then_ready_again(
    own_cluster: EmbeddedCluster, settings: Settings, clock: FakeClock
) -> None:
    async with _served_with_a_health_port(own_cluster, settings, clock) as (app, health):
        assert await _status(health, LIVENESS) == SERVING
        assert await _status(health, READINESS) == SERVING
        assert await _status(health, "") == SERVING

        own_cluster.pg_ctl("-w", "stop", "-m", "fast")
        await _until(health, READINESS, NOT_SERVING)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        while loop.time() - stopped_at < OUTAGE_SECONDS:
            assert await _status(health, LIVENESS) == SERVING
            assert await _status(health, READINESS) == NOT_SERVING
            await asyncio.sleep(5)

        own_cluster.start()
        await _until(health, READINESS, SERVING)
        assert await _status(health, LIVENESS) == SERVING
        assert app.queue.listening  # the notifier reconnected as well
    # A graceful stop turns everything NOT_SERVING first (checked in test_faults).


async def test_readiness_needs_the_queues_listen_connection_too(
    own_cluster: EmbeddedCluster, settings: Settings, clock: FakeClock
) -> None:
    """The database answers, but the queue's LISTEN connection is down (no
    admission or payment notice would reach this process): not ready, still
    live; ready again once it listens."""
    async with _served_with_a_health_port(own_cluster, settings, clock) as (app, health):
        assert await _status(health, READINESS) == SERVING
        app.queue.listening = False  # what the listener records when its connection is lost
        await _until(health, READINESS, NOT_SERVING)
        assert await _status(health, LIVENESS) == SERVING
        app.queue.listening = True
        await _until(health, READINESS, SERVING)
