"""AIP-155 request records' lifetime. Recording and replaying them is the unit
of work's (server/db/unit_of_work.py: UnitOfWork.replay and remember).

A SignUp retried with the same request_id and another password gets the first
answer (the account keeps the first password): fingerprints leave the
password out.

Records are kept for CONCERT_IDEMPOTENCY_TTL_HOURS (24 by default), then
pruned by a job: a retry within that window replays; a later one runs anew.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from google.protobuf.message import Message
from psycopg import AsyncConnection

ResponseT = TypeVar("ResponseT", bound=Message)


PRUNE_JOB = "idempotency.prune"
# Rows per DELETE (each its own short transaction), and batches per run: a run
# keeps up with up to 500,000 new records per interval (about 8,000 a second at
# the default minute) without one long transaction holding the table.
_PRUNE_BATCH = 10_000
_PRUNE_MAX_BATCHES = 50


async def prune_expired_keys(conn: AsyncConnection, older_than: datetime) -> int:
    """Delete records created before `older_than`, in bounded batches (autocommit),
    until a batch comes back short or the run has done _PRUNE_MAX_BATCHES."""
    pruned = 0
    for _ in range(_PRUNE_MAX_BATCHES):
        cursor = await conn.execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
            "  SELECT ctid FROM idempotency_keys WHERE created_at < %s LIMIT %s))",
            (older_than, _PRUNE_BATCH),
        )
        pruned += cursor.rowcount
        if cursor.rowcount < _PRUNE_BATCH:
            break
    return pruned
