"""Wiring the queue into the server: runtime start/stop and the expiry job."""

from __future__ import annotations

from server.context import ServiceContext
from server.queue.expiry import JOB_NAME, expiry_job


def install_queue(ctx: ServiceContext) -> None:
    ctx.on_start.append(ctx.queue.start)
    ctx.on_stop.append(ctx.queue.stop)
    ctx.jobs.add(JOB_NAME, expiry_job(ctx.clock, ctx.queue), ctx.settings.expiry_interval_seconds)
