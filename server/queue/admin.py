"""The operator's side of the queue: SetAdmission and GetQueueStats.

SetAdmission changes capacity and pause in one transaction with an admission
pass: the window first gives up its reach (numbers not drawn yet), then, unless
paused, the pass admits as many waiting fans as the new capacity leaves room
for. Pausing stops the window where it is: fans already admitted stay
admitted, nobody new is let in. Lowering the capacity admits nobody new until
fewer than that many admitted fans remain; nobody is sent back to the line.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from concert.v1 import admin_pb2
from server.clock import Clock
from server.db.unit_of_work import unit_of_work
from server.errors import Violations
from server.queue import store
from server.queue.admission_pass import admit_waiting
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
    async with unit_of_work(pool, clock) as unit:
        await store.lock_admission(unit)
        current = await store.lock_queue_state(unit)
        capacity = request.capacity if request.HasField("capacity") else current.capacity
        paused = request.paused if request.HasField("paused") else current.paused
        state = await store.set_admission(unit, capacity, paused, clock.now())
        state = await admit_waiting(unit, clock) or state
        await store.notify_change(unit, state)
    runtime.apply(state)
    response = admin_pb2.SetAdmissionResponse(capacity=state.capacity, paused=state.paused)
    response.update_time.FromDatetime(state.updated_at)
    return response


async def queue_stats(pool: AsyncConnectionPool, clock: Clock) -> admin_pb2.GetQueueStatsResponse:
    async with unit_of_work(pool, clock, snapshot=True) as unit:
        counts = await store.queue_counts(unit.conn, clock.now())
    return admin_pb2.GetQueueStatsResponse(
        issued_count=counts.issued,
        completed_count=counts.completed,
        admitted_count=counts.admitted,
        waiting_count=counts.waiting,
        capacity=counts.capacity,
        paused=counts.paused,
        completed_by_payment_count=counts.paid,
        lapsed_admitted_count=counts.lapsed_admitted,
        lapsed_waiting_count=counts.lapsed_waiting,
        lost_number_count=counts.lost_numbers,
        window_end=counts.window_limit,
    )
