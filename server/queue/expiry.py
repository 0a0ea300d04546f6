"""The expiry job: tokens whose expiry passed leave the queue and are counted.

One transaction marks them expired and adds how many it marked to
completed_count (and to lapsed_admitted or lapsed_waiting). Their places were
already free: the admission pass counts only unexpired tokens. The job runner
lets one process run it at a time, but the SQL alone is safe when runs overlap
(see store.expire_stale_tokens): each token moves live -> expired once, so it
is counted once.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from server.clock import Clock
from server.db.unit_of_work import unit_on
from server.jobs import JobFunction
from server.queue import store
from server.queue.admission import AdmissionState
from server.queue.runtime import QueueRuntime

JOB_NAME = "queue.expire_stale_tokens"


async def expire_and_count(
    conn: AsyncConnection, clock: Clock
) -> tuple[int, AdmissionState | None]:
    """One run, in one transaction: (tokens expired, the new state if any were)."""
    async with unit_on(conn, clock) as unit:
        now = clock.now()
        lapsed = await store.expire_stale_tokens(unit, now)
        if lapsed.total == 0:
            return 0, None
        state = await store.add_completed(
            unit, now, lapsed_admitted=lapsed.admitted, lapsed_waiting=lapsed.waiting
        )
        await store.notify_change(unit, state)
    return lapsed.total, state


def expiry_job(clock: Clock, runtime: QueueRuntime) -> JobFunction:
    async def run(conn: AsyncConnection) -> int:
        expired, state = await expire_and_count(conn, clock)
        if state is not None:
            runtime.apply(state)
        return expired

    return run
