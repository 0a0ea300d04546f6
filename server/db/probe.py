"""Readiness follows the database: a cheap periodic ping flips NOT_SERVING and back.

Without it, a server whose PostgreSQL is down still reports SERVING, and load
balancers keep sending calls that can only fail. One `SELECT 1` per interval,
on a connection of the probe's own (so it neither takes a pool slot from a
call nor shows up in the pool's counters): when it fails, health turns NOT_SERVING (the
calls themselves answer UNAVAILABLE meanwhile); when it succeeds again (the
pool has reconnected by itself), SERVING. It never overrides a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from server.background import cancel_and_wait

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0


class DatabaseProbe:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        interval: float = PROBE_INTERVAL_SECONDS,
        timeout: float = PROBE_TIMEOUT_SECONDS,
        also_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        # open_pool always passes the URL as a string.
        assert isinstance(pool.conninfo, str)
        self._conninfo: str = pool.conninfo
        self._on_change = on_change
        # What else readiness needs, checked each tick (the queue's LISTEN connection).
        self._also_ready = also_ready
        self._interval = interval
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self.reachable = True

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, application_name="concert-probe"
                    )
                await self._conn.execute("SELECT 1")
        except Exception:  # any failure to reach it is "unreachable"
            await self._close()
            return False
        return True

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="db-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            reachable = await self.ping() and self._also_ready()
            if reachable != self.reachable:
                self.reachable = reachable
                if reachable:
                    log.warning("database and queue notifier reachable again: ready")
                else:
                    log.warning("database or queue notifier unreachable: not ready until back")
                await self._on_change(reachable)
