"""The SQL of the queue aggregate: the queue_state row, the tokens, the NOTIFY channel."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from server.db.locks import LockNamespace, lock_id
from server.db.unit_of_work import Db, Lock, LockKind, Statement, UnitOfWork, execute
from server.queue.admission import AdmissionState

# Every change of queue_state is announced here, with the new row as payload.
CHANNEL = "queue_state"

_STATE_COLUMNS = (
    "version, window_limit, capacity, paused, completed_count, admitted_total, updated_at"
)
# The last queue number drawn (0 before the first): numbers above it are not drawn yet.
LAST_DRAWN = (
    "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM queue_numbers)"
)


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
    """Create the state row on first start; capacity seeds it (SetAdmission changes it later).

    The window starts reaching `capacity` numbers past the last drawn: the
    first fans are admitted on arrival, before any admission pass has run.
    """
    await conn.execute(
        "INSERT INTO queue_state (id, capacity, window_limit, updated_at, capacity_changed_at,"
        " window_moved_at)"
        f" VALUES (true, %(capacity)s, {LAST_DRAWN} + %(capacity)s, %(now)s, %(now)s, %(now)s)"
        " ON CONFLICT (id) DO NOTHING",
        {"capacity": capacity, "now": now},
    )


async def read_queue_state(conn: AsyncConnection) -> AdmissionState:
    cursor = await conn.execute(f"SELECT {_STATE_COLUMNS} FROM queue_state")
    row = await cursor.fetchone()
    if row is None:
        raise LookupError("queue_state row missing: the queue runtime has not started")
    return _state(row)


async def add_completed(
    db: Db, now: datetime, *, lapsed_admitted: int = 0, lapsed_waiting: int = 0
) -> AdmissionState:
    """Count tokens that lapsed (inside the window / still waiting) as completed,
    in the caller's transaction (takes the state row lock)."""
    cursor = await execute(
        db,
        "UPDATE queue_state SET completed_count = completed_count + %(admitted)s + %(waiting)s,"
        " lapsed_admitted = lapsed_admitted + %(admitted)s,"
        " lapsed_waiting = lapsed_waiting + %(waiting)s,"
        f" version = version + 1, updated_at = %(now)s RETURNING {_STATE_COLUMNS}",
        {"admitted": lapsed_admitted, "waiting": lapsed_waiting, "now": now},
        locks=[Lock.of(LockKind.QUEUE_STATE)],
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
def add_completed_cte(count: str = "%(completed)s") -> str:
    """ADD_COMPLETED_CTE with the count as an SQL expression (a payment counts the
    token its own statement ended)."""
    return (
        "state AS ("
        f"  UPDATE queue_state SET completed_count = completed_count + {count},"
        f"  version = version + 1, updated_at = %(now)s WHERE {count} > 0"
        f"  RETURNING {_STATE_COLUMNS}"
        ")"
    )


def notify_state_change(completed_tokens: str = "%(completed_tokens)s::json") -> str:
    """NOTIFY_STATE_CHANGE with the completed tokens as an SQL expression (a JSON
    array of [token id, expiry] pairs)."""
    return (
        f"pg_notify('{CHANNEL}', json_build_object("
        "'version', state.version, 'window_limit', state.window_limit,"
        " 'capacity', state.capacity, 'paused', state.paused,"
        " 'completed_count', state.completed_count, 'admitted_total', state.admitted_total,"
        f" 'updated_at', state.updated_at, 'completed_tokens', {completed_tokens})::text)"
    )


ADD_COMPLETED_CTE = add_completed_cte()
NOTIFY_STATE_CHANGE = notify_state_change()


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


async def lock_queue_state(unit: UnitOfWork) -> AdmissionState:
    cursor = await unit.execute(
        f"SELECT {_STATE_COLUMNS} FROM queue_state FOR UPDATE",
        locks=[Lock.of(LockKind.QUEUE_STATE)],
    )
    row = await cursor.fetchone()
    assert row is not None
    return _state(row)


async def lock_admission(unit: UnitOfWork) -> None:
    """Wait until no IssueToken is between drawing its number and committing, and
    keep new ones out until the transaction ends (see LockNamespace.ADMISSION)."""
    await unit.lock(Lock.of(LockKind.ADMISSION))


@dataclass(frozen=True)
class LineHead:
    """What the admission pass needs to know of the line, under its locks."""

    admitted: int  # live tokens inside the window
    last_drawn: int  # the last queue number drawn
    waiting: int  # live waiting tokens among the first `room - admitted` above the window
    last_waiting: int | None  # the highest number among those


async def read_line_head(
    conn: AsyncConnection, window_limit: int, room: int, now: datetime
) -> LineHead:
    """Count the live tokens inside the window, and read the first waiting ones
    that the free places (`room` minus those inside) could let in, in one statement.

    Live means state 'live' and not lapsed: a token past its expiry holds no
    place, even before the expiry job marks it.
    """
    cursor = await conn.execute(
        "WITH inside AS ("
        "  SELECT count(*) AS n FROM queue_tokens WHERE state = 'live'"
        "   AND expires_at > %(now)s AND queue_number <= %(limit)s"
        "), first_waiting AS ("
        "  SELECT queue_number FROM queue_tokens WHERE state = 'live'"
        "   AND expires_at > %(now)s AND queue_number > %(limit)s"
        "  ORDER BY queue_number LIMIT (SELECT greatest(%(room)s - n, 0) FROM inside)"
        ")"
        f" SELECT (SELECT n FROM inside), {LAST_DRAWN}, count(*), max(queue_number)"
        "  FROM first_waiting",
        {"now": now, "limit": window_limit, "room": room},
    )
    row = await cursor.fetchone()
    assert row is not None
    return LineHead(int(row[0]), int(row[1]), int(row[2]), row[3])


async def move_window(
    unit: UnitOfWork, old_limit: int, new_limit: int, admitted: int, now: datetime
) -> AdmissionState:
    """The pass's write, in one statement: the window's new end, the `admitted`
    waiting tokens it let in, and the lapsed waiting tokens it passed over,
    expired and counted here (SKIP LOCKED: one being ended elsewhere is that
    caller's to count); announced to every process."""
    cursor = await unit.execute(
        "WITH passed AS ("
        "  SELECT id FROM queue_tokens WHERE state = 'live' AND expires_at <= %(now)s"
        "   AND queue_number > %(old)s AND queue_number <= %(new)s"
        "  ORDER BY id FOR UPDATE SKIP LOCKED"
        "), ended AS ("
        "  UPDATE queue_tokens t SET state = 'expired', ended_at = %(now)s FROM passed"
        "   WHERE t.id = passed.id AND t.state = 'live' RETURNING t.id"
        "), state AS ("
        "  UPDATE queue_state SET window_limit = %(new)s,"
        "   admitted_total = admitted_total + %(admitted)s,"
        "   completed_count = completed_count + (SELECT count(*) FROM ended),"
        "   lapsed_waiting = lapsed_waiting + (SELECT count(*) FROM ended),"
        "   version = version + 1, updated_at = %(now)s, last_pass_at = %(now)s,"
        "   window_moved_at = %(now)s"
        f"  RETURNING {_STATE_COLUMNS}"
        f") SELECT {_STATE_COLUMNS}, {NOTIFY_STATE_CHANGE} FROM state",
        {"old": old_limit, "new": new_limit, "admitted": admitted, **completion_params([], now)},
        # The passed-over tokens are taken with SKIP LOCKED: never a wait.
        locks=[Lock.of(LockKind.QUEUE_STATE), Lock.of(LockKind.QUEUE_TOKEN, waits=False)],
    )
    row = await cursor.fetchone()
    assert row is not None
    return _state(row[:7])


async def record_pass(unit: UnitOfWork, now: datetime) -> None:
    """A pass that moved nothing still says it ran (the liveness check reads it)."""
    await unit.execute(
        "UPDATE queue_state SET last_pass_at = %s", (now,), locks=[Lock.of(LockKind.QUEUE_STATE)]
    )


async def set_admission(
    unit: UnitOfWork, capacity: int, paused: bool, now: datetime
) -> AdmissionState:
    """SetAdmission's write, under lock_admission: the window gives up its reach
    (numbers not drawn yet), so a pause or a lowered capacity admits nobody new;
    fans already inside stay inside. The caller then runs the pass (unless paused),
    which reaches again as far as the new capacity allows."""
    cursor = await unit.execute(
        f"UPDATE queue_state SET window_limit = least(window_limit, {LAST_DRAWN}),"
        " capacity_changed_at = CASE WHEN capacity <> %(capacity)s THEN %(now)s"
        "  ELSE capacity_changed_at END,"
        " capacity = %(capacity)s, paused = %(paused)s,"
        f" version = version + 1, updated_at = %(now)s RETURNING {_STATE_COLUMNS}",
        {"capacity": capacity, "paused": paused, "now": now},
        locks=[Lock.of(LockKind.QUEUE_STATE)],
    )
    row = await cursor.fetchone()
    assert row is not None
    return _state(row)


async def notify_change(
    unit: UnitOfWork,
    state: AdmissionState,
    completed_tokens: Iterable[tuple[uuid.UUID, datetime]] = (),
) -> None:
    """Announce the new state to every process; delivered when the transaction commits."""
    await unit.execute(
        "SELECT pg_notify(%s, %s)", (CHANNEL, encode_change(state, completed_tokens))
    )


def encode_change(
    state: AdmissionState, completed_tokens: Iterable[tuple[uuid.UUID, datetime]] = ()
) -> str:
    return json.dumps(
        {
            "version": state.version,
            "window_limit": state.window_limit,
            "capacity": state.capacity,
            "paused": state.paused,
            "completed_count": state.completed_count,
            "admitted_total": state.admitted_total,
            "updated_at": state.updated_at.isoformat(),
            "completed_tokens": _token_list(completed_tokens),
        }
    )


def decode_change(payload: str) -> tuple[AdmissionState, list[tuple[uuid.UUID, datetime]]]:
    data = json.loads(payload)
    state = AdmissionState(
        version=int(data["version"]),
        window_limit=int(data["window_limit"]),
        capacity=int(data["capacity"]),
        paused=bool(data["paused"]),
        completed_count=int(data["completed_count"]),
        admitted_total=int(data["admitted_total"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )
    tokens = [(uuid.UUID(t), datetime.fromisoformat(e)) for t, e in data["completed_tokens"]]
    return state, tokens


# -- tokens ------------------------------------------------------------------


async def lock_fan_queue(unit: UnitOfWork, user_id: uuid.UUID) -> None:
    """Serialise issue per fan until the transaction ends (one live token per fan)."""
    await unit.lock(Lock.of(LockKind.QUEUE_FAN, user_id))


async def find_live_token(conn: AsyncConnection, user_id: uuid.UUID) -> TokenRow | None:
    cursor = await conn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE user_id = %s AND state = 'live'",
        (user_id,),
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


async def get_token(db: Db, token_id: uuid.UUID, *, for_update: bool = False) -> TokenRow | None:
    lock = " FOR UPDATE" if for_update else ""
    cursor = await execute(
        db,
        f"SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE id = %s{lock}",
        (token_id,),
        locks=[Lock.of(LockKind.QUEUE_TOKEN, token_id)] if for_update else [],
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


def lock_token_then(token_id: uuid.UUID, then: Lock) -> Statement:
    """The token's row (FOR UPDATE), then the advisory lock `then`, in one statement
    (for UnitOfWork.send; its rows: the token's, or none). The MATERIALIZED CTE's
    FOR UPDATE runs before the outer projection takes the advisory lock, keeping
    the order token -> advisory. No token, no advisory lock."""
    return Statement(
        "WITH t AS MATERIALIZED ("
        f"  SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE id = %s FOR UPDATE"
        f") SELECT {TOKEN_COLUMNS}, pg_advisory_xact_lock(%s, %s) FROM t",
        (token_id, *then.advisory_key()),
        (Lock.of(LockKind.QUEUE_TOKEN, token_id), then),
    )


def token_row(rows: list[Any]) -> TokenRow | None:
    """The token of a statement that returned TOKEN_COLUMNS first (or nothing)."""
    return TokenRow(*rows[0][:6]) if rows else None


async def insert_token(
    unit: UnitOfWork, token_id: uuid.UUID, user_id: uuid.UUID, now: datetime, ttl: timedelta
) -> TokenRow:
    """A new live token with the next queue number (nextval is atomic and never repeats).

    Holds the admission lock shared until the transaction ends (see
    LockNamespace.ADMISSION), taken before the number is drawn.
    """
    cursor = await unit.execute(
        "WITH admission AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%s, 0))"
        " INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at)"
        " SELECT %s, %s, nextval('queue_numbers'), 'live', %s, %s FROM admission"
        f" RETURNING {TOKEN_COLUMNS}",
        (int(LockNamespace.ADMISSION), token_id, user_id, now, now + ttl),
        locks=[Lock.of(LockKind.ADMISSION)],
    )
    row = await cursor.fetchone()
    assert row is not None
    return TokenRow(*row)


async def claim_first_token(
    conn: AsyncConnection,
    token_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    ttl: timedelta,
) -> TokenRow | None:
    """IssueToken's common case in one autocommit statement: a fan with no live token.

    The statement holds the admission lock shared while it draws and inserts
    (see LockNamespace.ADMISSION), takes the fan's queue lock only if it is free
    (pg_try_advisory_xact_lock: another issue of this fan in flight sends the
    caller to the locked path instead of waiting here) and draws a number only
    when the fan has no live token in its snapshot; the insert is then
    arbitrated by the one-live-token-per-user index. One case slips through:
    another issue of this fan that commits between this statement's snapshot
    and its lock. The index then refuses the insert (DO NOTHING) after the
    number was drawn: that number is lost, like one a rolled-back issue drew,
    and takes no place (admission counts live tokens, not numbers).

    Returns None when no token was inserted (a live token, the fan's lock
    busy, or the insert refused): the caller takes the locked path.
    """
    cursor = await conn.execute(
        "WITH admission AS MATERIALIZED ("
        "  SELECT pg_advisory_xact_lock_shared(%(admission)s, 0)"
        "), claim AS MATERIALIZED ("
        "  SELECT nextval('queue_numbers') AS n FROM admission"
        "   WHERE NOT EXISTS (SELECT FROM queue_tokens WHERE user_id = %(user)s AND state = 'live')"
        "     AND pg_try_advisory_xact_lock(%(namespace)s, %(key)s)"
        ")"
        " INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at)"
        " SELECT %(id)s, %(user)s, claim.n, 'live', %(now)s, %(expires)s FROM claim"
        " ON CONFLICT (user_id) WHERE state = 'live' DO NOTHING"
        f" RETURNING {TOKEN_COLUMNS}",
        {
            "id": token_id,
            "user": user_id,
            "now": now,
            "expires": now + ttl,
            "admission": int(LockNamespace.ADMISSION),
            "namespace": int(LockNamespace.QUEUE_FAN),
            "key": lock_id(str(user_id)),
        },
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


async def touch_token(
    db: Db,
    token_id: uuid.UUID,
    owner: tuple[uuid.UUID, int],
    now: datetime,
    ttl: timedelta,
    admitted: bool,
    *,
    min_move: timedelta = timedelta(0),
) -> TokenRow | None:
    """Presence: extend a live token; the row as it then stands, None if there is no such token.

    `owner` is the (user, queue number) the caller's signed claims name: a
    row that says otherwise is not theirs (claims minted with a leaked key for
    someone else's token id), and is neither extended nor returned.

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
    cursor = await execute(
        db,
        "WITH touched AS ("
        "  UPDATE queue_tokens SET"
        "   admitted_at = CASE WHEN %(admitted)s THEN coalesce(admitted_at, %(now)s)"
        "    ELSE admitted_at END,"
        f"   expires_at = greatest(expires_at, {target})"
        "  WHERE id = %(id)s AND user_id = %(user)s AND queue_number = %(number)s"
        "   AND state = 'live' AND expires_at > %(now)s"
        "   AND ((%(admitted)s AND admitted_at IS NULL)"
        f"    OR {target} - expires_at >= %(min_move)s)"
        f"  RETURNING {TOKEN_COLUMNS}"
        ")"
        f" SELECT {TOKEN_COLUMNS} FROM touched"
        f" UNION ALL SELECT {TOKEN_COLUMNS} FROM queue_tokens"
        "  WHERE id = %(id)s AND user_id = %(user)s AND queue_number = %(number)s"
        "   AND NOT EXISTS (SELECT FROM touched)",
        {
            "id": token_id,
            "user": owner[0],
            "number": owner[1],
            "now": now,
            "ttl": ttl,
            "admitted": admitted,
            "min_move": min_move,
        },
        locks=[Lock.of(LockKind.QUEUE_TOKEN, token_id)],
    )
    row = await cursor.fetchone()
    return TokenRow(*row) if row else None


async def completed_unexpired(
    conn: AsyncConnection, now: datetime
) -> list[tuple[uuid.UUID, datetime]]:
    """Tokens used up by a payment whose signed expiry has not passed yet."""
    cursor = await conn.execute(
        "SELECT id, expires_at FROM queue_tokens WHERE state = 'completed' AND expires_at > %s",
        (now,),
    )
    return [(row[0], row[1]) for row in await cursor.fetchall()]


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


async def end_token(db: Db, token_id: uuid.UUID, state: str, now: datetime) -> datetime | None:
    """live -> completed/expired, only if still live; its expiry if this call moved it."""
    cursor = await execute(
        db,
        "UPDATE queue_tokens SET state = %s, ended_at = %s WHERE id = %s AND state = 'live'"
        " RETURNING expires_at",
        (state, now, token_id),
        locks=[Lock.of(LockKind.QUEUE_TOKEN, token_id)],
    )
    row = await cursor.fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class Lapsed:
    """Tokens a call expired: inside the window (admitted) or still waiting."""

    admitted: int = 0
    waiting: int = 0

    @property
    def total(self) -> int:
        return self.admitted + self.waiting


async def expire_stale_tokens(unit: UnitOfWork, now: datetime) -> Lapsed:
    """Mark every live token whose expiry has passed as expired; how many this call moved.

    Rows are locked in id order (no deadlock between overlapping runs), and the
    update re-checks state = 'live' after the lock: a row another run or a
    payment already ended is skipped, so no token is counted twice. A token
    inside the window lapsed while admitted; the admission pass expires the
    lapsed waiting tokens it passes over itself, so one still above the window
    here lapsed while waiting.
    """
    cursor = await unit.execute(
        "WITH stale AS ("
        "  SELECT id FROM queue_tokens WHERE state = 'live' AND expires_at <= %(now)s"
        "  ORDER BY id FOR UPDATE"
        "), expired AS ("
        "  UPDATE queue_tokens t SET state = 'expired', ended_at = %(now)s FROM stale"
        "  WHERE t.id = stale.id AND t.state = 'live' RETURNING t.queue_number"
        ") SELECT count(*) FILTER (WHERE queue_number <= q.window_limit),"
        "         count(*) FILTER (WHERE queue_number > q.window_limit)"
        "    FROM expired, queue_state q",
        {"now": now},
        locks=[Lock.of(LockKind.QUEUE_TOKEN)],  # the stale ones, in id order
    )
    row = await cursor.fetchone()
    return Lapsed(int(row[0]), int(row[1])) if row else Lapsed()


async def live_waiting_numbers(
    conn: AsyncConnection, window_limit: int, now: datetime
) -> tuple[list[int], int]:
    """The live waiting tokens' numbers, ascending (each process's copy of the line),
    and the last number drawn before they were read."""
    cursor = await conn.execute(
        f"SELECT {LAST_DRAWN}, coalesce(array_agg(queue_number ORDER BY queue_number), '{{}}')"
        "  FROM queue_tokens WHERE state = 'live' AND expires_at > %s AND queue_number > %s",
        (now, window_limit),
    )
    row = await cursor.fetchone()
    assert row is not None
    return list(row[1]), int(row[0])


@dataclass(frozen=True)
class QueueCounts:
    """GetQueueStats, on one snapshot."""

    window_limit: int
    capacity: int
    paused: bool
    completed: int
    lapsed_admitted: int
    lapsed_waiting: int
    issued: int
    paid: int
    admitted: int
    waiting: int
    lost_numbers: int


async def queue_counts(conn: AsyncConnection, now: datetime) -> QueueCounts:
    """The queue's counters; the caller's transaction gives them one snapshot.

    Scans every token (an operator's call, not a fan's). Lost numbers are the
    numbers drawn that are not a token's.
    """
    cursor = await conn.execute(
        "SELECT q.window_limit, q.capacity, q.paused, q.completed_count,"
        "       q.lapsed_admitted, q.lapsed_waiting, t.issued, t.paid, t.admitted, t.waiting,"
        f"      {LAST_DRAWN} - t.issued"
        "  FROM queue_state q, LATERAL ("
        "    SELECT count(*) AS issued, count(*) FILTER (WHERE state = 'completed') AS paid,"
        "           count(*) FILTER (WHERE live AND queue_number <= q.window_limit) AS admitted,"
        "           count(*) FILTER (WHERE live AND queue_number > q.window_limit) AS waiting"
        "      FROM (SELECT state, queue_number, state = 'live' AND expires_at > %(now)s AS live"
        "              FROM queue_tokens) tokens"
        "  ) t",
        {"now": now},
    )
    row = await cursor.fetchone()
    assert row is not None
    return QueueCounts(*(row[:3]), *(int(v) for v in row[3:]))
