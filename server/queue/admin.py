"""The operator's side of the queue: SetAdmission and GetQueueStats.

Pausing freezes the admission window at the limit it had (completed_count +
capacity at that moment): fans already admitted stay admitted, nobody new is
let in while completions pile up, and resuming lets the window jump to
completed_count + capacity at once. A capacity change during a pause applies
on resume.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from concert.v1 import admin_pb2
from server.clock import Clock
from server.errors import Violations
from server.queue import store
from server.queue.runtime import QueueRuntime

MAX_CAPACITY = 1_000_000


async def set_admission(
    pool: AsyncConnectionPool,
    clock: Clock,
    runtime: QueueRuntime,
    request: admin_pb2.SetAdmissionRequest,
) -> admin_pb2.SetAdmissionResponse:
    violations = Violations()
    if request.HasField("capacity") and not 0 <= request.capacity <= MAX_CAPACITY:
        violations.add("capacity", f"must be from 0 to {MAX_CAPACITY}")
    violations.raise_if_any()
    async with pool.connection() as conn, conn.transaction():
        now = clock.now()
        current = await store.lock_queue_state(conn)
        capacity = request.capacity if request.HasField("capacity") else current.capacity
        paused = request.paused if request.HasField("paused") else current.paused
        if paused and not current.paused:
            paused_limit: int | None = current.completed_count + current.capacity
        elif paused:
            paused_limit = current.paused_limit
        else:
            paused_limit = None
        state = await store.update_admission(conn, capacity, paused, paused_limit, now)
        await store.notify_change(conn, state)
    runtime.apply(state)
    response = admin_pb2.SetAdmissionResponse(capacity=state.capacity, paused=state.paused)
    response.update_time.FromDatetime(state.updated_at)
    return response


async def queue_stats(pool: AsyncConnectionPool, clock: Clock) -> admin_pb2.GetQueueStatsResponse:
    async with pool.connection() as conn, conn.transaction():
        state = await store.read_queue_state(conn)
        issued, admitted, waiting = await store.queue_counts(conn, state.window_limit, clock.now())
    return admin_pb2.GetQueueStatsResponse(
        issued_count=issued,
        completed_count=state.completed_count,
        admitted_count=admitted,
        waiting_count=waiting,
        capacity=state.capacity,
        paused=state.paused,
    )
