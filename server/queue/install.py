"""Wiring the queue into the server: runtime start/stop, the expiry job, its gauges."""

from __future__ import annotations

from server.context import ServiceContext
from server.queue.admin import queue_stats
from server.queue.expiry import JOB_NAME, expiry_job

QUEUE_GAUGES = {
    "concert_queue_issued": "Queue tokens issued so far (the highest queue number).",
    "concert_queue_completed": "Tokens that left the queue, paid or expired (completed_count).",
    "concert_queue_admitted": "Live tokens inside the admission window now.",
    "concert_queue_waiting": "Live tokens still waiting for admission.",
    "concert_queue_capacity": "The admission window's capacity.",
}


def install_queue(ctx: ServiceContext) -> None:
    ctx.on_start.append(ctx.queue.start)
    ctx.on_stop.append(ctx.queue.stop)
    ctx.jobs.add(JOB_NAME, expiry_job(ctx.clock, ctx.queue), ctx.settings.expiry_interval_seconds)

    async def read_queue_gauges() -> dict[str, float]:
        # The same counts GetQueueStats answers, read at scrape time only.
        stats = await queue_stats(ctx.pool, ctx.clock)
        return {
            "concert_queue_issued": stats.issued_count,
            "concert_queue_completed": stats.completed_count,
            "concert_queue_admitted": stats.admitted_count,
            "concert_queue_waiting": stats.waiting_count,
            "concert_queue_capacity": stats.capacity,
        }

    ctx.metrics.register_gauges(QUEUE_GAUGES, read_queue_gauges)
