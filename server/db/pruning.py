"""Deleting what a table no longer needs, in bounded batches.

A prune job deletes a batch per statement (each its own short transaction, in
autocommit), until a batch comes back short or the run has done its batches:
one run keeps up with a high rate of new rows without one long transaction
holding the table, and a backlog is worked off over the next runs.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection, sql

# Rows per DELETE, and DELETEs per run: 500,000 rows a run, about 8,000 a
# second at the default minute between runs.
BATCH = 10_000
MAX_BATCHES = 50


async def delete_in_batches(
    conn: AsyncConnection, table: str, time_column: str, cutoff: datetime
) -> int:
    """Delete the rows of `table` whose `time_column` is before `cutoff`, a batch
    per statement, until a batch comes back short or MAX_BATCHES ran; the rows deleted."""
    deleted = 0
    for _ in range(MAX_BATCHES):
        cursor = await conn.execute(
            sql.SQL(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                "  SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s))"
            ).format(table=sql.Identifier(table), column=sql.Identifier(time_column)),
            (cutoff, BATCH),
        )
        deleted += cursor.rowcount
        if cursor.rowcount < BATCH:
            break
    return deleted
