"""Wiring the queue into the server: runtime start/stop, the expiry and admission jobs,
the admission trigger, its gauges."""

from __future__ import annotations

from server.context import ServiceContext
from server.queue import admission_pass
from server.queue.admin import queue_stats
from server.queue.admission_pass import AdmissionTrigger, admission_job
from server.queue.expiry import JOB_NAME, expiry_job
from server.queue.runtime import QueueRuntime

QUEUE_GAUGES = {
    "concert_queue_issued": "Queue tokens issued so far.",
    "concert_queue_completed": "Tokens that left the queue, paid or expired (completed_count).",
    "concert_queue_admitted": "Live tokens inside the admission window now.",
    "concert_queue_waiting": "Live tokens still waiting for admission.",
    "concert_queue_capacity": "How many live fans may be admitted at once.",
    "concert_queue_paused": "1 while admission is paused (SetAdmission), else 0.",
    "concert_queue_lapsed_admitted": "Tokens that expired inside the admission window.",
    "concert_queue_lapsed_waiting": "Tokens that expired while waiting.",
    "concert_queue_lost_numbers": "Queue numbers drawn that never became a token.",
}


def install_queue(ctx: ServiceContext, queue: QueueRuntime) -> None:
    ctx.on_start.append(queue.start)
    ctx.on_stop.append(queue.stop)
    ctx.jobs.add(JOB_NAME, expiry_job(ctx.clock, queue), ctx.settings.expiry_interval_seconds)
    ctx.jobs.add(
        admission_pass.JOB_NAME,
        admission_job(ctx.clock, queue),
        admission_pass.INTERVAL_SECONDS,
    )
    # Sooner than the next second: when this process hears that places were freed.
    trigger = AdmissionTrigger(lambda: ctx.jobs.run_now(admission_pass.JOB_NAME))
    queue.on_places_freed = trigger.poke

    async def start_trigger() -> None:
        trigger.start()

    ctx.on_start.append(start_trigger)
    ctx.on_stop.append(trigger.stop)

    async def read_queue_gauges() -> dict[str, float]:
        # The same counts GetQueueStats answers, read at scrape time only.
        stats = await queue_stats(ctx.pool, ctx.clock)
        return {
            "concert_queue_issued": stats.issued_count,
            "concert_queue_completed": stats.completed_count,
            "concert_queue_admitted": stats.admitted_count,
            "concert_queue_waiting": stats.waiting_count,
            "concert_queue_capacity": stats.capacity,
            "concert_queue_paused": 1.0 if stats.paused else 0.0,
            "concert_queue_lapsed_admitted": stats.lapsed_admitted_count,
            "concert_queue_lapsed_waiting": stats.lapsed_waiting_count,
            "concert_queue_lost_numbers": stats.lost_number_count,
        }

    ctx.metrics.register_gauges(QUEUE_GAUGES, read_queue_gauges)
