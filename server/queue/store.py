"""The SQL of the queue aggregate: the queue_state row, the tokens, the NOTIFY channel."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from server.db.locks import LockNamespace, lock_id
from server.queue.admission import AdmissionState

# Every change of queue_state is announced here, with the new row as payload.
CHANNEL = "queue_state"

_STATE_COLUMNS = "version, completed_count, capacity, paused, paused_limit, updated_at"


def _state(row: tuple) -> AdmissionState:
    return AdmissionState(*row)


@dataclass(frozen=True)
class TokenRow:
    token_id: uuid.UUID
    user_id: uuid.UUID
    queue_number: int
    state: str  # 'live' | 'completed' | 'expired'
    expires_at: datetime
    admitted_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        return self.state == "live" and self.expires_at > now


TOKEN_COLUMNS = "id, user_id, queue_number, state, expires_at, admitted_at"


# -- queue_state -------------------------------------------------------------


async def ensure_queue_state(conn: AsyncConnection, capacity: int, now: datetime) -> None:
    """Create the state row on first start; capacity seeds it (SetAdmission changes it later)."""
    await conn.execute(
        "INSERT INTO queue_state (id, capacity, updated_at) VALUES (true, %s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (capacity, now),
    )


async def read_queue_state(conn: AsyncConnection) -> AdmissionState:
    cursor = await conn.execute(f"SELECT {_STATE_COLUMNS} FROM queue_state")
    row = await cursor.fetchone()
    if row is None:
        raise LookupError("queue_state row missing: the queue runtime has not started")
    return _state(row)


async def add_completed(conn: AsyncConnection, count: int, now: datetime) -> AdmissionState:
    """completed_count += count, in the caller's transaction (takes the state row lock)."""
    cursor = await conn.execute(
        "UPDATE queue_state SET completed_count = completed_count + %s, version = version + 1,"
        f" updated_at = %s RETURNING {_STATE_COLUMNS}",
        (count, now),
    )
    row = await cursor.fetchone()
    assert row is not None
    return _state(row)


# For a statement that also writes other rows: completed_count += %(completed)s
# (nothing at all when it is 0) as a data-modifying CTE named `state`, and the
# NOTIFY of the change built from it in SQL (`SELECT {NOTIFY_STATE_CHANGE} FROM
# state`), so counting and announcing cost one round trip; completion_params()
# gives their parameters. The payload is encode_change's, field for field
# (decode_change reads both; tests/queue/test_store_payload.py checks it).
ADD_COMPLETED_CTE = (
    "state AS ("
    "  UPDATE queue_state SET completed_count = completed_count + %(completed)s,"
    "  version = version + 1, updated_at = %(now)s WHERE %(completed)s > 0"
    f"  RETURNING {_STATE_COLUMNS}"
    ")"
)
NOTIFY_STATE_CHANGE = (
    f"pg_notify('{CHANNEL}', json_build_object("
    "'version', state.version, 'completed_count', state.completed_count,"
    " 'capacity', state.capacity, 'paused', state.paused, 'paused_limit', state.paused_limit,"
    " 'updated_at', state.updated_at, 'completed_tokens', %(completed_tokens)s::json)::text)"
)


def completion_params(
    completed_tokens: list[tuple[uuid.UUID, datetime]], now: datetime
) -> dict[str, object]:
    """The parameters of ADD_COMPLETED_CTE and NOTIFY_STATE_CHANGE: count these
    (token, expiry) pairs as completed and announce them."""
    return {
        "completed": len(completed_tokens),
        "now": now,
        "completed_tokens": json.dumps(_token_list(completed_tokens)),
    }


def _token_list(completed_tokens: Iterable[tuple[uuid.UUID, datetime]]) -> list[list[str]]:
    return [[str(t), e.isoformat()] for t, e in completed_tokens]


async def lock_queue_state(conn: AsyncConnection) -> AdmissionState:
    cursor = await conn.execute(f"SELECT {_STATE_COLUMNS} FROM queue_state FOR UPDATE")
    row = await cursor.fetchone()
    assert row is not None
    return _state(row)


async def update_admission(
    conn: AsyncConnection, capacity: int, paused: bool, paused_limit: int | None, now: datetime
) -> AdmissionState:
    cursor = await conn.execute(
        "UPDATE queue_state SET capacity = %s, paused = %s, paused_limit = %s,"
        f" version = version + 1, updated_at = %s RETURNING {_STATE_COLUMNS}",
        (capacity, paused, paused_limit, now),
    )
    row = await cursor.fetchone()
    assert row is not None
    return _state(row)


async def notify_change(
    conn: AsyncConnection,
    state: AdmissionState,
    completed_tokens: Iterable[tuple[uuid.UUID, datetime]] = (),
) -> None:
    """Announce the new state to every process; delivered when the transaction commits."""
    await conn.execute(
        "SELECT pg_notify(%s, %s)", (CHANNEL, encode_change(state, completed_tokens))
    )


def encode_change(
    state: AdmissionState, completed_tokens: Iterable[tuple[uuid.UUID, datetime]] = ()
) -> str:
    return json.dumps(
        {
            "version": state.version,
            "completed_count": state.completed_count,
            "capacity": state.capacity,
            "paused": state.paused,
            "paused_limit": state.paused_limit,
            "updated_at": state.updated_at.isoformat(),
            "completed_tokens": _token_list(completed_tokens),
        }
    )


def decode_change(payload: str) -> tuple[AdmissionState, list[tuple[uuid.UUID, datetime]]]:
    data = json.loads(payload)
    state = AdmissionState(
        version=int(data["version"]),
        completed_count=int(data["completed_count"]),
        capacity=int(data["capacity"]),
        paused=bool(data["paused"]),
        paused_limit=None if data["paused_limit"] is None else int(data["paused_limit"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )
    tokens = [(uuid.UUID(t), datetime.fromisoformat(e)) for t, e in data["completed_tokens"]]
    return state, tokens


# -- tokens ------------------------------------------------------------------


async def lock_user_queue(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    """Serialise issue per user until the transaction ends (one live token per user)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, %s)",
        (int(LockNamespace.QUEUE_USER), lock_id(str(user_id))),
    )


async def find_live_token(conn: AsyncConnection, user_id: uuid.UUID) -> TokenRow | None:
    cursor = await conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE user_id = %s AND state = 'live'",
        (user_id,),
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


async def get_token(
    conn: AsyncConnection, token_id: uuid.UUID, *, for_update: bool = False
) -> TokenRow | None:
    lock = " FOR UPDATE" if for_update else ""
    cursor = await conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE id = %s{lock}", (token_id,)
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


async def lock_token_then(
    conn: AsyncConnection, token_id: uuid.UUID, namespace: int, key: int
) -> TokenRow | None:
    """get_token(for_update=True), then pg_advisory_xact_lock(namespace, key), in one round trip.

    The token's row lock is taken first (the MATERIALIZED CTE's FOR UPDATE runs
    before the outer projection calls the advisory lock), keeping the lock
    order token -> advisory of docs/concurrency.md. No token, no advisory lock.
    """
    cursor = await conn.execute(
        "WITH t AS MATERIALIZED ("
        f"  SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE id = %s FOR UPDATE"
        f") SELECT {TOKEN_COLUMNS}, pg_advisory_xact_lock(%s, %s) FROM t",
        (token_id, namespace, key),
    )
    row = await cursor.fetchone()
    return TokenRow(*row[:6]) if row else None


async def insert_token(
    conn: AsyncConnection, token_id: uuid.UUID, user_id: uuid.UUID, now: datetime, ttl: timedelta
) -> TokenRow:
    """A new live token with the next queue number (nextval is atomic and never repeats)."""
    cursor = await conn.execute(
        "INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at)"
        " VALUES (%s, %s, nextval('queue_numbers'), 'live', %s, %s)"
        f" RETURNING {TOKEN_COLUMNS}",
        (token_id, user_id, now, now + ttl),
    )
    row = await cursor.fetchone()
    assert row is not None
    return TokenRow(*row)


@dataclass(frozen=True)
class FirstClaim:
    """What claim_first_token did: a new token, nothing, or a number used up in a race."""

    token: TokenRow | None  # the new live token, when it was inserted
    burnt_number: int | None  # a queue number drawn but not used (see claim_first_token)


async def claim_first_token(
    conn: AsyncConnection,
    token_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    ttl: timedelta,
) -> FirstClaim:
    """IssueToken's common case in one autocommit statement: a fan with no live token.

    The statement takes the fan's queue lock only if it is free
    (pg_try_advisory_xact_lock: another issue of this fan in flight sends the
    caller to the locked path instead of waiting here) and draws a number only
    when the fan has no live token in its snapshot; the insert is then
    arbitrated by the one-live-token-per-user index. One case slips through:
    another issue of this fan that commits between this statement's snapshot
    and its lock. The index then refuses the insert (DO NOTHING) after the
    number was drawn; the number is reported as burnt so the caller records
    it as a token that ended at once (record_unused_number) and counts it as
    completed: the admission window does not keep a place no one holds.

    Returns FirstClaim(None, None) when the fan already has a live token (or
    its lock was busy): the caller takes the locked path.
    """
    cursor = await conn.execute(
        "WITH claim AS MATERIALIZED ("
        "  SELECT nextval('queue_numbers') AS n"
        "   WHERE NOT EXISTS (SELECT FROM queue_tokens WHERE user_id = %(user)s AND state = 'live')"
        "     AND pg_try_advisory_xact_lock(%(namespace)s, %(key)s)"
        "), inserted AS ("
        "  INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at)"
        "  SELECT %(id)s, %(user)s, claim.n, 'live', %(now)s, %(expires)s FROM claim"
        "  ON CONFLICT (user_id) WHERE state = 'live' DO NOTHING"
        f"  RETURNING {TOKEN_COLUMNS}"
        ") SELECT claim.n, inserted.* FROM claim LEFT JOIN inserted ON true",
        {
            "id": token_id,
            "user": user_id,
            "now": now,
            "expires": now + ttl,
            "namespace": int(LockNamespace.QUEUE_USER),
            "key": lock_id(str(user_id)),
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return FirstClaim(None, None)
    if row[1] is None:
        return FirstClaim(None, int(row[0]))
    return FirstClaim(TokenRow(*row[1:]), None)


async def record_unused_number(
    conn: AsyncConnection, user_id: uuid.UUID, queue_number: int, now: datetime
) -> None:
    """A number claim_first_token drew and could not use, kept as a token that ended at once.

    The caller counts it in completed_count in the same transaction, so the
    window moves past it, and the row is what makes that count add up: every
    number counted as completed is an ended row (the token-counted-once
    invariant). The token was never signed, so no client ever holds it.
    """
    await conn.execute(
        "INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at,"
        " ended_at) VALUES (%s, %s, %s, 'expired', %s, %s, %s)",
        (uuid.uuid4(), user_id, queue_number, now, now, now),
    )


async def touch_token(
    conn: AsyncConnection,
    token_id: uuid.UUID,
    now: datetime,
    ttl: timedelta,
    admitted: bool,
    *,
    min_move: timedelta = timedelta(0),
) -> TokenRow | None:
    """Presence: extend a live token; the row as it then stands, None if there is no such token.

    Waiting: expiry moves to now + ttl. Admitted: admitted_at is recorded the
    first time it is seen, and expiry never passes admitted_at + ttl (the
    bounded active window). Expiry never moves backwards.

    The row is written only when its expiry would move by at least `min_move`
    (or admission is first recorded): a fan polling every second would
    otherwise cost a write and a WAL flush per poll for a few seconds of
    expiry. Otherwise, like a token that is not live, the row is returned as
    it stands (one statement either way).
    """
    target = (
        "(CASE WHEN %(admitted)s THEN coalesce(admitted_at, %(now)s) ELSE %(now)s END + %(ttl)s)"
    )
    cursor = await conn.execute(
        "WITH touched AS ("
        "  UPDATE queue_tokens SET"
        "   admitted_at = CASE WHEN %(admitted)s THEN coalesce(admitted_at, %(now)s)"
        "    ELSE admitted_at END,"
        f"   expires_at = greatest(expires_at, {target})"
        "  WHERE id = %(id)s AND state = 'live' AND expires_at > %(now)s"
        "   AND ((%(admitted)s AND admitted_at IS NULL)"
        f"    OR {target} - expires_at >= %(min_move)s)"
        f"  RETURNING {TOKEN_COLUMNS}"
        ")"
        f" SELECT {TOKEN_COLUMNS} FROM touched"
        f" UNION ALL SELECT {TOKEN_COLUMNS} FROM queue_tokens"
        "  WHERE id = %(id)s AND NOT EXISTS (SELECT FROM touched)",
        {"id": token_id, "now": now, "ttl": ttl, "admitted": admitted, "min_move": min_move},
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


async def touch_waiting_tokens(
    conn: AsyncConnection, token_ids: list[uuid.UUID], now: datetime, ttl: timedelta
) -> dict[uuid.UUID, datetime]:
    """Presence for many open watch streams in one statement: new expiry per token kept alive."""
    cursor = await conn.execute(
        "UPDATE queue_tokens SET expires_at = greatest(expires_at, %(now)s + %(ttl)s)"
        " WHERE id = ANY(%(ids)s) AND state = 'live' AND expires_at > %(now)s"
        " AND admitted_at IS NULL RETURNING id, expires_at",
        {"ids": token_ids, "now": now, "ttl": ttl},
    )
    return {row[0]: row[1] for row in await cursor.fetchall()}


async def end_token(
    conn: AsyncConnection, token_id: uuid.UUID, state: str, now: datetime
) -> datetime | None:
    """live -> completed/expired, only if still live; its expiry if this call moved it."""
    cursor = await conn.execute(
        "UPDATE queue_tokens SET state = %s, ended_at = %s WHERE id = %s AND state = 'live'"
        " RETURNING expires_at",
        (state, now, token_id),
    )
    row = await cursor.fetchone()
    return None if row is None else row[0]


async def expire_stale_tokens(conn: AsyncConnection, now: datetime) -> int:
    """Mark every live token whose expiry has passed as expired; how many this call moved.

    Rows are locked in id order (no deadlock between overlapping runs), and the
    update re-checks state = 'live' after the lock: a row another run or a
    payment already ended is skipped, so no token is counted twice.
    """
    cursor = await conn.execute(
        "WITH stale AS ("
        "  SELECT id FROM queue_tokens WHERE state = 'live' AND expires_at <= %(now)s"
        "  ORDER BY id FOR UPDATE"
        "), expired AS ("
        "  UPDATE queue_tokens t SET state = 'expired', ended_at = %(now)s FROM stale"
        "  WHERE t.id = stale.id AND t.state = 'live' RETURNING t.id"
        ") SELECT count(*) FROM expired",
        {"now": now},
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def queue_counts(
    conn: AsyncConnection, window_limit: int, now: datetime
) -> tuple[int, int, int]:
    """(issued, admitted now, waiting): live tokens inside and outside the window."""
    cursor = await conn.execute(
        "SELECT (SELECT coalesce(max(queue_number), 0) FROM queue_tokens),"
        " count(*) FILTER (WHERE queue_number <= %(limit)s),"
        " count(*) FILTER (WHERE queue_number > %(limit)s)"
        " FROM queue_tokens WHERE state = 'live' AND expires_at > %(now)s",
        {"limit": window_limit, "now": now},
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])
