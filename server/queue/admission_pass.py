"""The admission pass: let in the first live waiting fans while there are free places.

    free       = capacity - live tokens inside the window     (0 while paused)
    new window = the number of the free-th live waiting token, if that many wait;
                 otherwise the last number drawn + the places left over ("reach":
                 the next fans to arrive are admitted on arrival)

Live means not ended and not lapsed, so numbers nobody holds (an IssueToken
rolled back after drawing, a sequence that jumped after a crash or failover)
and waiting tokens that lapsed take no place, and admitted live tokens plus
the reach never exceed the capacity. The pass holds the admission lock
exclusive (store.lock_admission), so no number is drawn but uncommitted while
it counts: the bound is exact, not "capacity + issues in flight".

Who runs it: the job runner every second in one process at a time (the job's
lock), and, sooner, any process that hears a change that freed places (a
payment, an expiry run), through AdmissionTrigger; SetAdmission runs it in its
own transaction. Running it twice is harmless: the second finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection

from server.background import cancel_and_wait
from server.clock import Clock
from server.db.unit_of_work import UnitOfWork, unit_on
from server.jobs import JobFunction
from server.queue import store
from server.queue.admission import AdmissionState
from server.queue.runtime import QueueRuntime

log = logging.getLogger(__name__)

JOB_NAME = "queue.admit_waiting"
INTERVAL_SECONDS = 1.0
# After a change that freed places, the pass runs this soon, batching the
# payments that land meanwhile into one pass.
TRIGGER_DELAY_SECONDS = 0.02


async def admit_waiting(unit: UnitOfWork, clock: Clock) -> AdmissionState | None:
    """One pass, in the caller's unit of work; the new state if the window moved."""
    await store.lock_admission(unit)
    state = await store.lock_queue_state(unit)
    now = clock.now()
    room = 0 if state.paused else state.capacity
    head = await store.read_line_head(unit.conn, state.window_limit, room, now)
    free = room - head.admitted
    if free <= 0:
        await store.record_pass(unit, now)
        return None
    if head.waiting == free:
        # As many wait as there are places: the window ends at the free-th of them.
        assert head.last_waiting is not None
        new_limit, admitted = head.last_waiting, free
    else:
        new_limit, admitted = head.last_drawn + free - head.waiting, head.waiting
    new_limit = max(new_limit, state.window_limit)  # the window never moves back
    if new_limit == state.window_limit:
        await store.record_pass(unit, now)
        return None
    return await store.move_window(unit, state.window_limit, new_limit, admitted, now)


def admission_job(clock: Clock, runtime: QueueRuntime) -> JobFunction:
    async def run(conn: AsyncConnection) -> int:
        async with unit_on(conn, clock) as unit:
            state = await admit_waiting(unit, clock)
        if state is None:
            return 0
        runtime.apply(state)
        return state.window_limit

    return run


class AdmissionTrigger:
    """Runs the pass soon after a change that freed places (and never two at once here).

    QueueRuntime calls poke() when it adopts such a change; the pass then runs
    through `run` (the job runner's run_now: skipped when another process is
    running it, whose pass then sees the change or the next second's does).
    """

    def __init__(self, run: Callable[[], Awaitable[object]]) -> None:
        self._run = run
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._wanted.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="queue-admission-trigger")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await self._wanted.wait()
            await asyncio.sleep(TRIGGER_DELAY_SECONDS)
            self._wanted.clear()
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("admission pass failed; the next second's pass retries", exc_info=True)
