"""Scheduled jobs (APScheduler, in-process), run by one process at a time.

Every server process schedules every job, but a run first takes the job's
session advisory lock with pg_try_advisory_lock on its own connection: when
another process is already running it, this run is skipped. If the process
holding the lock dies, PostgreSQL drops its connection and the lock with it,
so another process takes the next run. Jobs must still be written to be safe
when runs overlap in time (conditional updates), because the lock protects
runs, not the effects of a stalled one that resumes.

Tests call `run_now(name)` and drive time with a FakeClock instead of sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from server.db.locks import LockNamespace, lock_id

log = logging.getLogger(__name__)

# A job receives the connection that holds its lock (autocommit: the job opens
# its own transactions) and returns a short summary for the log, e.g. a count.
JobFunction = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(frozen=True)
class JobRun:
    name: str
    ran: bool  # False when another process held the job's lock
    result: Any = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Job:
    name: str
    function: JobFunction
    interval_seconds: float


class JobRunner:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._jobs: dict[str, _Job] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self.listeners: list[Callable[[JobRun], None]] = []

    def add(self, name: str, function: JobFunction, interval_seconds: float) -> None:
        if name in self._jobs:
            raise ValueError(f"job {name!r} added twice")
        self._jobs[name] = _Job(name, function, interval_seconds)

    @property
    def names(self) -> list[str]:
        return list(self._jobs)

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        for job in self._jobs.values():
            scheduler.add_job(
                self.run_now,
                "interval",
                args=[job.name],
                seconds=job.interval_seconds,
                id=job.name,
                max_instances=1,  # never overlap runs within one process
                coalesce=True,  # after a stall, run once, not once per missed interval
            )
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def run_now(self, name: str) -> JobRun:
        """Run one job here and now, if no other process is running it."""
        job = self._jobs[name]
        key = (int(LockNamespace.JOBS), lock_id(name))
        started = time.perf_counter()
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
                row = await cursor.fetchone()
                if not row or not row[0]:
                    run = JobRun(name, ran=False)
                else:
                    try:
                        result = await job.function(conn)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
                    run = JobRun(name, True, result, time.perf_counter() - started)
        except Exception:
            log.exception("job %s failed", name)
            raise
        if run.ran:
            # A run that did nothing (the admission pass, most seconds) is no news.
            level = logging.INFO if run.result else logging.DEBUG
            log.log(level, "job %s done in %.3fs: %s", name, run.seconds, run.result)
        for listener in self.listeners:
            listener(run)
        return run
