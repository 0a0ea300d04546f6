"""Wiring the accounts into the server: the hashing workers' end and the sign-in
budgets' last writes at stop, the job that prunes sign-in attempts out of the
budgets' window, and the hashing line's gauges."""

from __future__ import annotations

from psycopg import AsyncConnection

from server.accounts.runtime import AccountRuntime
from server.accounts.throttle import PRUNE_JOB, prune_attempts
from server.context import ServiceContext


def install_accounts(ctx: ServiceContext, accounts: AccountRuntime) -> None:
    async def close() -> None:
        accounts.hasher.close()
        await accounts.throttle.settled()  # while the pool is open

    async def prune(conn: AsyncConnection) -> int:
        return await prune_attempts(conn, ctx.clock.now())

    def gauges() -> dict[str, float]:
        hasher = accounts.hasher
        return {
            "concert_password_hashing_open_in_flight": hasher.open.in_flight,
            "concert_password_hashing_proven_in_flight": hasher.proven.in_flight,
            "concert_password_refusals_held": accounts.pacing.held,
        }

    ctx.on_stop.append(close)
    ctx.jobs.add(PRUNE_JOB, prune, ctx.settings.expiry_interval_seconds)
    ctx.metrics.register_gauges(HASHING_GAUGES, gauges)


HASHING_GAUGES = {
    "concert_password_hashing_open_in_flight": (
        "Password calls holding a place in the open (anonymous) hashing lane, running or waiting."
    ),
    "concert_password_hashing_proven_in_flight": (
        "Password calls holding a place in the proven lane (callers showing a past session)."
    ),
    "concert_password_refusals_held": (
        "Refused password calls waiting their retry delay on the server before a second try"
        " (beyond CONCERT_PASSWORD_REFUSALS_AT_ONCE_PER_SECOND)."
    ),
}
