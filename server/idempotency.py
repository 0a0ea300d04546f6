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

from server.db.pruning import delete_in_batches

ResponseT = TypeVar("ResponseT", bound=Message)


PRUNE_JOB = "idempotency.prune"


async def prune_expired_keys(conn: AsyncConnection, older_than: datetime) -> int:
    """Delete records created before `older_than`, in bounded batches (server/db/pruning.py)."""
    return await delete_in_batches(conn, "idempotency_keys", "created_at", older_than)
