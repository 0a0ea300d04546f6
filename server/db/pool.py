"""The connection pool: the only way the service reaches PostgreSQL.

Connections run in autocommit; every use case opens its transaction
explicitly (`async with conn.transaction()`). Each session gets the service's
statement and lock timeouts, so a stuck lock fails one call instead of hanging
many, and works in UTC.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from server.config import Settings


def session_options(settings: Settings) -> str:
    return (
        f"-c statement_timeout={settings.statement_timeout_ms} "
        f"-c lock_timeout={settings.lock_timeout_ms} "
        "-c idle_in_transaction_session_timeout=60000 "
        "-c TimeZone=UTC"
    )


async def open_pool(
    url: str,
    settings: Settings,
    *,
    name: str = "concert",
    min_size: int | None = None,
    configure: Callable[[AsyncConnection[tuple]], Awaitable[None]] | None = None,
) -> AsyncConnectionPool[AsyncConnection[tuple]]:
    """`configure` runs on each new connection (the tracing instruments it there)."""
    pool: AsyncConnectionPool[AsyncConnection[tuple]] = AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size if min_size is None else min_size,
        max_size=settings.pool_max_size,
        kwargs={
            "autocommit": True,
            "row_factory": tuple_row,
            "options": session_options(settings),
            "application_name": name,
        },
        # No check on checkout (it would cost a round trip per call): a
        # connection that breaks fails its call with UNAVAILABLE and the pool
        # discards it and reconnects in the background.
        reconnect_timeout=300.0,
        timeout=5.0,
        name=name,
        configure=configure,
        open=False,
    )
    await pool.open(wait=True, timeout=30.0)
    return pool
