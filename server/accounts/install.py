"""Wiring the accounts into the server: the hashing workers' end, and the job that
prunes sign-in attempts out of the budgets' window."""

from __future__ import annotations

from psycopg import AsyncConnection

from server.accounts.runtime import AccountRuntime
from server.accounts.throttle import PRUNE_JOB, prune_attempts
from server.context import ServiceContext


def install_accounts(ctx: ServiceContext, accounts: AccountRuntime) -> None:
    async def close_hasher() -> None:
        accounts.hasher.close()

    async def prune(conn: AsyncConnection) -> int:
        return await prune_attempts(conn, ctx.clock.now())

    ctx.on_stop.append(close_hasher)
    ctx.jobs.add(PRUNE_JOB, prune, ctx.settings.expiry_interval_seconds)
