"""Wiring booking into the server: the hold-expiry and reconciliation jobs."""

from __future__ import annotations

from datetime import timedelta

from psycopg import AsyncConnection

from server.booking.holds import expire_holds
from server.booking.module_books import BooksRun, reconcile_module_books
from server.booking.module_client import module_clients
from server.booking.payments import reconcile_payments
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext

HOLD_EXPIRY_JOB = "hold-expiry"
RECONCILIATION_JOB = "payment-reconciliation"
BOOKS_JOB = "module-books-reconciliation"

# What the last books run in this process found (jobs run in one process at a
# time, so another process's gauges may be older; the log has every run).
BOOKS_GAUGES = {
    "concert_module_books_unreported_charges": (
        "Module charges taken and not reported to the server for over one interval"
        " (last books reconciliation run here)."
    ),
    "concert_module_books_both": (
        "Module charges refunded at the module and recorded as a payment here (must be 0)."
    ),
    "concert_module_books_unbacked_payments": (
        "Payments recorded here that the module declined or kept for another amount (must be 0)."
    ),
    "concert_module_books_refunds_failed": (
        "Refunds asked of a module by the last run that failed (tried again next run)."
    ),
    "concert_module_books_modules_unreachable": "Modules the last run could not read.",
}


def install_booking(ctx: ServiceContext, booking: BookingRuntime) -> None:
    async def hold_expiry(conn: AsyncConnection) -> int:
        return await expire_holds(conn, ctx.clock)

    async def reconciliation(conn: AsyncConnection) -> dict[str, int]:
        return await reconcile_payments(ctx, booking, conn)

    interval = ctx.settings.expiry_interval_seconds
    ctx.jobs.add(HOLD_EXPIRY_JOB, hold_expiry, interval)
    ctx.jobs.add(RECONCILIATION_JOB, reconciliation, interval)
    if booking.module_secrets.addresses:
        _install_books_job(ctx, booking)


def _install_books_job(ctx: ServiceContext, booking: BookingRuntime) -> None:
    """Only for modules whose secrets line names an address: the server calls no other."""
    interval = ctx.settings.expiry_interval_seconds
    last = BooksRun()

    async def books(conn: AsyncConnection) -> dict[str, int]:
        nonlocal last
        async with module_clients(booking.module_secrets, ctx.clock) as clients:
            last = await reconcile_module_books(
                conn, clients, ctx.clock.now(), timedelta(seconds=interval)
            )
        # The counts that are not 0; a run that found all settled is no news in the log.
        return {key: value for key, value in last.counts().items() if value} if last.news else {}

    def gauges() -> dict[str, float]:
        return {
            "concert_module_books_unreported_charges": last.unreported,
            "concert_module_books_both": last.both,
            "concert_module_books_unbacked_payments": last.unbacked,
            "concert_module_books_refunds_failed": last.refund_failed,
            "concert_module_books_modules_unreachable": last.unreachable,
        }

    ctx.jobs.add(BOOKS_JOB, books, interval)
    ctx.metrics.register_gauges(BOOKS_GAUGES, gauges)
