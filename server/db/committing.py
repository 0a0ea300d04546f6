"""A transaction whose last statement carries its COMMIT.

Some rows are written by every call of a use case (a date's sold counter, the
queue's completed_count): their row locks serialise the calls, for as long as
each transaction holds them. Taken in the last statement they are still held
across one more round trip, the COMMIT: the time for this process's event
loop, busy with the other calls, to get back to the connection and send it.
Under load that wait, not the work, set the ceiling (Pay stopped at ~570/s
with half its connections waiting on those locks: docs/load-test-report.md,
Round 3).

`execute_then_commit` sends the last statement and COMMIT as one message (a
simple-protocol query; psycopg's ClientCursor binds the parameters, libpq
quotes them), so PostgreSQL releases the locks as soon as the WAL is flushed.
psycopg's `conn.transaction()` would send a COMMIT of its own afterwards, so
these transactions are opened with `transaction` below instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncClientCursor, AsyncConnection
from psycopg.pq import TransactionStatus


@asynccontextmanager
async def transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """BEGIN; the body; COMMIT unless the body's execute_then_commit did; ROLLBACK on error.

    conn must be in autocommit mode and idle.
    """
    await conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        if not conn.closed and conn.info.transaction_status is not TransactionStatus.IDLE:
            try:
                await conn.rollback()
            except psycopg.Error:
                pass  # a broken connection: the pool discards it; the first error matters
        raise
    if conn.info.transaction_status is TransactionStatus.INTRANS:
        await conn.execute("COMMIT")


async def execute_then_commit(conn: AsyncConnection, query: str, params: Mapping[str, Any]) -> None:
    """The transaction's last statement and its COMMIT, in one round trip.

    If the statement fails, PostgreSQL skips the COMMIT and the transaction
    is left aborted: `transaction` rolls it back as the error propagates.
    """
    await AsyncClientCursor(conn).execute(f"{query};\nCOMMIT", params)
