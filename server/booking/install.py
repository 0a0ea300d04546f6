"""Wiring booking into the server: the hold-expiry and reconciliation jobs."""

from __future__ import annotations

from psycopg import AsyncConnection

from server.booking.holds import expire_holds
from server.booking.payments import reconcile_payments
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext

HOLD_EXPIRY_JOB = "hold-expiry"
RECONCILIATION_JOB = "payment-reconciliation"


def install_booking(ctx: ServiceContext, booking: BookingRuntime) -> None:
    async def hold_expiry(conn: AsyncConnection) -> int:
        return await expire_holds(conn, ctx.clock)

    async def reconciliation(conn: AsyncConnection) -> dict[str, int]:
        return await reconcile_payments(ctx, booking, conn)

    interval = ctx.settings.expiry_interval_seconds
    ctx.jobs.add(HOLD_EXPIRY_JOB, hold_expiry, interval)
    ctx.jobs.add(RECONCILIATION_JOB, reconciliation, interval)
