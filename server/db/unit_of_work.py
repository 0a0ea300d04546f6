"""The unit of work: the only place that begins and commits a transaction.

A use case opens one, says what it locks and sends its statements through it:

    async with unit_of_work(pool, clock) as unit:
        replay = await unit.replay(record)          # AIP-155: a retry's first answer
        ...
        await unit.execute(LOCK_TOKEN, params, locks=[Lock(QUEUE_TOKEN, token_id)])
        ...
        return await unit.remember(record, response)  # stored with the change

and the unit commits when the block ends (or rolls back when it raises).

Three policies live here, so that a reader sees them whole:

- **Lock order.** Every lockable kind has a rank in one global order
  (`LockKind`). A statement that takes locks declares them; the unit refuses
  (LockOrderError, before the statement is sent) a lock whose rank is below
  one already taken, or, within a kind, a key below one already taken. Two
  transactions that take locks in one order cannot deadlock, and that order
  is checked by code, not remembered. A declaration says what its statement
  locks; keeping the two in step is the statement author's job, next to it.
- **AIP-155 request ids.** `replay` inserts the (scope, request_id) key as the
  transaction's first lock: a concurrent duplicate blocks on its primary key
  until the first transaction ends, then finds the stored answer. `remember`
  stores the answer in the same transaction as the change, so a failed call
  leaves no key and a retry runs anew. Fingerprints leave out the request id
  and secret fields (SignUp's password: a plain hash of it in a database dump
  would undo the slow password hash).
- **The last statement carries the COMMIT.** Rows every call of a use case
  writes (a date's sold counter, the queue's completed_count) serialise those
  calls for as long as their row locks are held. `send(..., commit=True)`
  sends the last statement and COMMIT in one round trip
  (psycopg's pipeline mode), so those locks are released as soon as the WAL is
  flushed, never held across one more round trip for this
  process's busy event loop to send a COMMIT (docs/load-test-report.md,
  Round 3: Pay stopped at ~570/s with half its connections waiting on them).

Single statements sent in autocommit mode (a read, one conditional UPDATE)
need no unit: PostgreSQL runs each in a transaction of its own. Their
functions say so in their docstrings.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

import psycopg
from google.protobuf.message import Message
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.db.locks import LockNamespace, lock_id
from server.errors import ErrorReason, FieldViolation, InvalidArgument

ResponseT = TypeVar("ResponseT", bound=Message)
Params = Mapping[str, Any] | Sequence[Any] | None
Query = str | sql.SQL | sql.Composed


class LockKind(IntEnum):
    """What a transaction can lock, in the one order every transaction takes them.

    The value is the rank: a transaction takes kinds in increasing rank (and,
    within a kind, keys in increasing order). A lock that never waits (SKIP
    LOCKED, pg_try_advisory_xact_lock) cannot close a cycle and is exempt.
    docs/concurrency.md says why each kind sits where it does.
    """

    # The AIP-155 record's primary key: inserted first, so a duplicate waits
    # for the first call before it has taken anything else.
    REQUEST_ID = 10
    # A fan's queue lock (advisory QUEUE_FAN): one fan's issues take turns.
    QUEUE_FAN = 20
    # A payment attempt row (the three-step Pay through an outside module).
    PAYMENT_ATTEMPT = 30
    # A fan's queue token row.
    QUEUE_TOKEN = 40
    # The admission window (advisory ADMISSION, one key): shared by IssueToken
    # while it draws and inserts a number, exclusive for the admission pass
    # and SetAdmission (which then reach token rows only with SKIP LOCKED).
    ADMISSION = 50
    # A fan's hold cap (advisory HOLD_CAP): ReserveSeat's count-then-add.
    HOLD_CAP = 60
    # A reservation row.
    RESERVATION = 70
    # A wallet row (Charge, Pay's debit, refunds).
    WALLET = 80
    # A seat row.
    SEAT = 90
    # A concert date row (sold_seat_count: every payment of the date).
    CONCERT_DATE = 100
    # The queue's one state row (completed_count, the window): every payment.
    QUEUE_STATE = 110
    # The signing keys' creation on first start (advisory SECRETS, one key).
    SECRETS = 120
    # An email's sign-in budget, then an address's (advisory; server/accounts/
    # throttle.py): a password attempt's count-then-add, in a transaction of its own.
    SIGN_IN_EMAIL = 130
    SIGN_IN_ADDRESS = 140


@dataclass(frozen=True, order=True)
class Lock:
    """One lock: a kind, the key of the thing locked (a row id, a user id; empty for
    "the rows this statement matches"), and whether taking it may wait.

    Locks compare, hash and sort by (kind, key): the order to take them in."""

    kind: LockKind
    key: str = ""
    waits: bool = field(default=True, compare=False)

    @staticmethod
    def of(kind: LockKind, key: object = "", *, waits: bool = True) -> Lock:
        return Lock(kind, "" if key == "" else str(key), waits)

    def comes_before(self, other: Lock) -> bool:
        """Strictly earlier in the global order (several rows of a kind: no key order)."""
        if self.kind != other.kind:
            return self.kind < other.kind
        return bool(self.key and other.key) and self.key < other.key

    def __str__(self) -> str:
        return f"{self.kind.name}({self.key})" if self.key else self.kind.name

    def advisory_key(self) -> tuple[int, int]:
        """The (namespace, id) of pg_advisory_xact_lock for an advisory kind."""
        return int(_ADVISORY[self.kind]), lock_id(self.key) if self.key else 0


# The kinds that are advisory locks, and their key spaces (server/db/locks.py).
_ADVISORY = {
    LockKind.QUEUE_FAN: LockNamespace.QUEUE_FAN,
    LockKind.ADMISSION: LockNamespace.ADMISSION,
    LockKind.HOLD_CAP: LockNamespace.HOLD_CAP,
    LockKind.SECRETS: LockNamespace.SECRETS,
    LockKind.SIGN_IN_EMAIL: LockNamespace.SIGN_IN_EMAIL,
    LockKind.SIGN_IN_ADDRESS: LockNamespace.SIGN_IN_ADDRESS,
}
# Takes an advisory lock until the transaction ends; its parameters: Lock.advisory_key().
_ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"


class LockOrderError(AssertionError):
    """A lock asked for out of the global order: a bug in the use case, never sent."""


class LockOrder:
    """The locks one transaction has taken, and the check that the next ones come after."""

    def __init__(self) -> None:
        self.taken: list[Lock] = []

    def admit(self, locks: Iterable[Lock]) -> list[Lock]:
        """The declared locks that wait, in the order to take them (kind, then key);
        LockOrderError if one comes before a lock this transaction already holds.
        Taking again a lock already held is always allowed."""
        held = set(self.taken)
        wanted = sorted(lock for lock in set(locks) if lock.waits and lock not in held)
        for lock in wanted:
            for earlier in self.taken:
                if lock.comes_before(earlier):
                    raise LockOrderError(
                        f"{lock} asked for after {earlier}: the order is server.db."
                        "unit_of_work.LockKind's"
                    )
        self.taken.extend(wanted)
        return wanted


@dataclass(frozen=True)
class RequestRecord(Generic[ResponseT]):
    """What AIP-155 needs of a mutation: its scope (the method and the caller), its
    request id (None: not idempotent, runs every time), the request and its answer's type."""

    scope: str
    request_id: uuid.UUID | None
    request: Message
    response_type: type[ResponseT]
    # The request's field the id came from, named when it is reused.
    id_field: str = "request_id"

    def fingerprint(self) -> bytes:
        return fingerprint(self.request)


# Fields never hashed into a fingerprint, by message type.
SECRET_FIELDS = {"concert.v1.SignUpRequest": ("password",)}


def fingerprint(request: Message) -> bytes:
    """A hash of the request without its request_id field and its secret fields."""
    copy = type(request)()
    copy.CopyFrom(request)
    left_out = ("request_id", *SECRET_FIELDS.get(copy.DESCRIPTOR.full_name, ()))
    for name in left_out:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


async def stored_answer(
    conn: AsyncConnection, record: RequestRecord[ResponseT]
) -> ResponseT | None:
    """The first answer to this request id, if one is stored; REQUEST_ID_REUSED if the id
    came with another request. A read: no lock, no transaction needed."""
    if record.request_id is None:
        return None
    cursor = await conn.execute(
        "SELECT fingerprint, response FROM idempotency_keys WHERE scope = %s AND request_id = %s",
        (record.scope, record.request_id),
    )
    row = await cursor.fetchone()
    if row is None or row[1] is None:
        return None
    if bytes(row[0]) != record.fingerprint():
        raise InvalidArgument(
            [FieldViolation(record.id_field, "already used for a different request")],
            reason=ErrorReason.ERROR_REASON_REQUEST_ID_REUSED,
        )
    return record.response_type.FromString(bytes(row[1]))


# For a write sent in the same batch as record_statement's INSERT, before
# Python knows whether the request already ran: true unless its key row holds
# an answer (committed by the first call, which this INSERT waited for). With
# no request id, always true. Parameters: UnitOfWork.unanswered_params.
UNANSWERED_GUARD = (
    "NOT EXISTS (SELECT FROM idempotency_keys WHERE scope = %(scope)s"
    " AND request_id = %(request_id)s AND response IS NOT NULL)"
)


@dataclass(frozen=True)
class Statement:
    """A statement for UnitOfWork.send, with the locks it takes."""

    query: Query
    params: Params = None
    locks: tuple[Lock, ...] = ()


class UnitOfWork:
    """One transaction on one connection; see the module's docstring.

    BEGIN goes with the first statement, in the same round trip, so a use case
    that sends its statements in one or two batches (`send`) costs one or two
    round trips in all. `round_trips` counts them.
    """

    def __init__(
        self, conn: AsyncConnection, clock: Clock | None = None, *, snapshot: bool = False
    ) -> None:
        self.conn = conn
        self.clock = clock  # dates the AIP-155 record (a unit that records none needs none)
        # A read-only transaction whose statements all see one snapshot
        # (statistics and invariant checks that add up several tables).
        self.snapshot = snapshot
        self.locks = LockOrder()
        self.begun = False
        self.committed = False
        self.round_trips = 0

    async def execute(
        self, query: Query, params: Params = None, *, locks: Iterable[Lock] = ()
    ) -> AsyncCursor[Any]:
        """A statement of the transaction; `locks`: what it locks, checked against the order."""
        [cursor] = await self._pipeline([Statement(query, params, tuple(locks))])
        return cursor

    async def run_script(self, script: sql.SQL) -> None:
        """Several commands in one string, without parameters (a migration file):
        they need PostgreSQL's simple protocol, which the pipeline cannot carry."""
        self._insist_open()
        if not self.begun:
            await self.send()
        self.round_trips += 1
        await self.conn.execute(script)

    async def send(self, *statements: Statement, commit: bool = False) -> list[list[Any]]:
        """Several statements in ONE round trip (and COMMIT after them, with
        commit=True); the rows each returned, in order.

        They go in psycopg's pipeline mode: every message is written at once
        and PostgreSQL answers them in order, each statement still prepared
        once per connection and planned as usual. Each runs with a snapshot of
        its own (READ COMMITTED), so one that must see what an earlier one
        waited for (a count after a lock) may follow it in the same message.
        If a statement fails, PostgreSQL skips the rest, COMMIT included, and
        the unit rolls back as the error propagates.
        """
        cursors = await self._pipeline(list(statements), commit=commit)
        return [await c.fetchall() if c.description else [] for c in cursors]

    async def _pipeline(
        self, statements: list[Statement], *, commit: bool = False
    ) -> list[AsyncCursor[Any]]:
        self._insist_open()
        for statement in statements:
            self.locks.admit(statement.locks)
        self.round_trips += 1
        if self.begun and len(statements) == 1 and not commit:
            # One statement alone: a plain execute costs the event loop less.
            return [await self.conn.execute(statements[0].query, statements[0].params)]
        cursors = []
        async with self.conn.pipeline():
            if not self.begun:
                self.begun = True
                await self.conn.execute(self._begin_sql())
            for statement in statements:
                cursors.append(await self.conn.execute(statement.query, statement.params))
            if commit:
                await self.conn.execute("COMMIT")
        if commit:
            self.committed = True
        return cursors

    async def lock(self, *locks: Lock) -> None:
        """Take advisory locks (the kinds in _ADVISORY) until the end."""
        await self.send(*self.lock_statements(*locks))

    @staticmethod
    def lock_statements(*locks: Lock) -> list[Statement]:
        """lock's statements, in the order to take them, for a caller that sends
        them with other statements (the locks and what they guard in one message)."""
        return [
            Statement(_ADVISORY_LOCK, lock.advisory_key(), (lock,)) for lock in sorted(set(locks))
        ]

    async def replay(self, record: RequestRecord[ResponseT]) -> ResponseT | None:
        """None when this request runs now (its key is inserted: the first lock of the
        transaction); the stored answer when it already ran (REQUEST_ID_REUSED if the
        id came with another request)."""
        statement = self.record_statement(record)
        if statement is None:
            return None
        [inserted] = await self.send(statement)
        return await self.replayed(record, inserted)

    def record_statement(self, record: RequestRecord[Any]) -> Statement | None:
        """replay's INSERT of the key, for a caller that sends it with other statements
        (then `replayed` reads its rows); None when the request has no id."""
        if record.request_id is None:
            return None
        assert self.clock is not None, "a unit that records requests is given a clock"
        return Statement(
            "INSERT INTO idempotency_keys (scope, request_id, fingerprint, created_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (record.scope, record.request_id, record.fingerprint(), self.clock.now()),
            (Lock.of(LockKind.REQUEST_ID, f"{record.scope}/{record.request_id}"),),
        )

    @staticmethod
    def unanswered_params(record: RequestRecord[Any]) -> dict[str, object]:
        """The parameters of UNANSWERED_GUARD for this record."""
        return {"scope": record.scope, "request_id": record.request_id}

    async def replayed(
        self, record: RequestRecord[ResponseT], inserted: list[Any]
    ) -> ResponseT | None:
        """What replay answers, given the rows record_statement returned."""
        if record.request_id is None or inserted:
            return None
        self.round_trips += 1
        answer = await stored_answer(self.conn, record)
        assert answer is not None  # committed together with the change
        return answer

    async def remember(self, record: RequestRecord[ResponseT], response: ResponseT) -> ResponseT:
        """Store the answer with the change (after replay said the request runs now)."""
        if (statement := self.remember_statement(record, response)) is not None:
            await self.send(statement)
        return response

    @staticmethod
    def remember_statement(record: RequestRecord[Any], response: Message) -> Statement | None:
        """remember's UPDATE, for a caller that sends it with other statements."""
        if record.request_id is None:
            return None
        return Statement(
            "UPDATE idempotency_keys SET response = %s WHERE scope = %s AND request_id = %s",
            (response.SerializeToString(), record.scope, record.request_id),
        )

    def _insist_open(self) -> None:
        if self.committed:
            raise RuntimeError("the unit of work has committed: nothing more may be sent")

    def _begin_sql(self) -> str:
        if self.snapshot:
            return "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        return "BEGIN"

    async def _end(self) -> None:
        if not self.committed and self.conn.info.transaction_status is TransactionStatus.INTRANS:
            self.round_trips += 1
            await self.conn.execute("COMMIT")
        self.committed = True

    async def _roll_back(self) -> None:
        conn = self.conn
        if not conn.closed and conn.info.transaction_status is not TransactionStatus.IDLE:
            self.round_trips += 1
            try:
                await conn.rollback()
            except psycopg.Error:
                pass  # a broken connection: the pool discards it; the first error matters


async def run_once(
    pool: AsyncConnectionPool,
    clock: Clock,
    record: RequestRecord[ResponseT],
    change: Callable[[UnitOfWork], Awaitable[ResponseT]],
) -> ResponseT:
    """The usual shape of a mutation: one unit of work holding its AIP-155 record and
    the change; a retry gets the first answer, and the change runs once."""
    async with unit_of_work(pool, clock) as unit:
        if (replay := await unit.replay(record)) is not None:
            return replay
        return await unit.remember(record, await change(unit))


@asynccontextmanager
async def unit_on(
    conn: AsyncConnection, clock: Clock | None = None, *, snapshot: bool = False
) -> AsyncIterator[UnitOfWork]:
    """A unit of work on a connection the caller holds (autocommit mode, idle)."""
    unit = UnitOfWork(conn, clock, snapshot=snapshot)
    try:
        yield unit
    except BaseException:
        await unit._roll_back()
        raise
    await unit._end()


@asynccontextmanager
async def unit_of_work(
    pool: AsyncConnectionPool, clock: Clock, *, snapshot: bool = False
) -> AsyncIterator[UnitOfWork]:
    """A unit of work on a connection from the pool, returned when it ends."""
    async with pool.connection() as conn, unit_on(conn, clock, snapshot=snapshot) as unit:
        yield unit


# Where a statement goes: a unit of work, or a connection in autocommit mode
# (the statement is then a transaction of its own, and its locks end with it).
Db = UnitOfWork | AsyncConnection


async def execute(
    db: Db, query: Query, params: Params = None, *, locks: Iterable[Lock] = ()
) -> AsyncCursor[Any]:
    """Send a statement through a unit (its locks checked) or on its own (autocommit)."""
    if isinstance(db, UnitOfWork):
        return await db.execute(query, params, locks=locks)
    return await db.execute(query, params)
