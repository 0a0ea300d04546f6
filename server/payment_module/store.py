"""The payment module's SQL, kept together: balances, payments, the outbox.

Every function that changes more than one row runs in one unit of work
(server/db/unit_of_work.py, the only place that begins and commits) on a
connection the caller took from the pool; single statements run in autocommit
and say so. The module's rows are none of the server's lock kinds, so its
statements declare no locks. No two functions wait for each other's rows in
opposite orders: a payment locks the balance and then writes a new payment
row; a refund locks its payment and then the balance; an answer, its payment.
Times come from the caller's clock, never SQL now(), so tests move time with a
FakeClock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from server.db.unit_of_work import unit_on

PAYMENT_COLUMNS = (
    "payment_id, reservation_id, amount, state, decline_reason, server_answer,"
    " server_payment_id, refund_reason, callback_attempts, account_id, card_last4,"
    " created_at, answered_at, refunded_at"
)


@dataclass(frozen=True)
class PaymentRow:
    """One payments row, as PAYMENT_COLUMNS reads it."""

    payment_id: uuid.UUID
    reservation_id: uuid.UUID
    amount: int
    state: str
    decline_reason: str | None
    server_answer: str
    server_payment_id: str | None
    refund_reason: str | None
    callback_attempts: int
    account_id: str | None
    card_last4: str | None
    created_at: datetime
    answered_at: datetime | None
    refunded_at: datetime | None


@dataclass(frozen=True)
class NewPayment:
    """A payment about to be recorded (pay_reservation decided its fate)."""

    payment_id: uuid.UUID
    request_id: uuid.UUID
    fingerprint: bytes
    reservation_id: uuid.UUID
    amount: int
    session_token: str
    account_id: str | None
    card_last4: str | None


@dataclass(frozen=True)
class DueCallback:
    """A callback the dispatcher leased and is about to send."""

    payment_id: uuid.UUID
    reservation_id: uuid.UUID
    amount: int
    session_token: str
    attempts: int


async def read_payment(conn: AsyncConnection, payment_id: uuid.UUID) -> PaymentRow | None:
    """One payment (autocommit read)."""
    cursor = await conn.execute(
        f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = %s", (payment_id,)
    )
    row = await cursor.fetchone()
    return PaymentRow(*row) if row else None


async def read_by_request(
    conn: AsyncConnection, request_id: uuid.UUID
) -> tuple[bytes, PaymentRow] | None:
    """The payment a PayReservation request id made, with its fingerprint."""
    cursor = await conn.execute(
        f"SELECT fingerprint, {PAYMENT_COLUMNS} FROM payments WHERE request_id = %s",
        (request_id,),
    )
    row = await cursor.fetchone()
    return (bytes(row[0]), PaymentRow(*row[1:])) if row else None


async def read_balance(conn: AsyncConnection, account_id: str) -> int:
    """A balance; 0 for an account never topped up (autocommit read)."""
    cursor = await conn.execute("SELECT balance FROM accounts WHERE account_id = %s", (account_id,))
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def top_up(
    conn: AsyncConnection,
    request_id: uuid.UUID,
    account_id: str,
    amount: int,
    now: datetime,
) -> tuple[str, int, int]:
    """Add to a balance once per request id; returns the (account, amount,
    balance after) the request id recorded, this call's or the first's."""
    async with unit_on(conn) as unit:
        # The request id first: a concurrent duplicate waits here for the first.
        cursor = await unit.execute(
            "INSERT INTO top_ups (request_id, account_id, amount, balance_after, created_at)"
            " VALUES (%s, %s, %s, 0, %s) ON CONFLICT (request_id) DO NOTHING RETURNING 1",
            (request_id, account_id, amount, now),
        )
        if await cursor.fetchone() is not None:
            cursor = await unit.execute(
                "INSERT INTO accounts AS a (account_id, balance, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (account_id) DO UPDATE"
                "   SET balance = a.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at"
                " RETURNING balance",
                (account_id, amount, now),
            )
            balance = await _one(cursor)
            await unit.execute(
                "UPDATE top_ups SET balance_after = %s WHERE request_id = %s",
                (balance, request_id),
            )
            return account_id, amount, int(balance)
    cursor = await conn.execute(
        "SELECT account_id, amount, balance_after FROM top_ups WHERE request_id = %s",
        (request_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), int(row[2])


async def record_payment(
    conn: AsyncConnection, payment: NewPayment, decline_reason: str | None, now: datetime
) -> PaymentRow | None:
    """Take the money (or record the decline) and queue the callback, in one
    transaction; None when the request id was recorded already (the caller
    replays it). A balance too low declines with INSUFFICIENT_FUNDS."""
    async with unit_on(conn) as unit:
        if payment.account_id is not None and decline_reason is None:
            # The balance's lock first, so two payments from one balance take turns.
            cursor = await unit.execute(
                "SELECT balance FROM accounts WHERE account_id = %s FOR UPDATE",
                (payment.account_id,),
            )
            row = await cursor.fetchone()
            if row is None or row[0] < payment.amount:
                decline_reason = "INSUFFICIENT_FUNDS"
        succeeded = decline_reason is None
        cursor = await unit.execute(
            "INSERT INTO payments (payment_id, request_id, fingerprint, reservation_id, amount,"
            " session_token, account_id, card_last4, state, decline_reason, server_answer,"
            " created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (request_id) DO NOTHING RETURNING {PAYMENT_COLUMNS}",
            (
                payment.payment_id,
                payment.request_id,
                payment.fingerprint,
                payment.reservation_id,
                payment.amount,
                payment.session_token if succeeded else None,
                payment.account_id,
                payment.card_last4,
                "succeeded" if succeeded else "declined",
                decline_reason,
                "pending" if succeeded else "not_reported",
                now,
            ),
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        if succeeded:
            if payment.account_id is not None:
                await unit.execute(
                    "UPDATE accounts SET balance = balance - %s, updated_at = %s"
                    " WHERE account_id = %s",
                    (payment.amount, now, payment.account_id),
                )
            await unit.execute(
                "INSERT INTO callback_outbox (payment_id, next_attempt_at) VALUES (%s, %s)",
                (payment.payment_id, now),
            )
        return PaymentRow(*row)


async def refund(
    conn: AsyncConnection,
    payment_id: uuid.UUID,
    reason: str,
    now: datetime,
    request_id: uuid.UUID | None = None,
) -> bool:
    """Give a succeeded payment's money back (to its balance, if it came from
    one), mark the server's answer REFUND and end its callback, in one
    transaction. False when it is not a succeeded payment the server has not
    kept (refunded already, declined, or PAID): nothing changes."""
    async with unit_on(conn) as unit:
        cursor = await unit.execute(
            "UPDATE payments SET state = 'refunded', refunded_at = %s, refund_reason = %s,"
            " refund_request_id = %s, server_answer = 'refund',"
            " answered_at = coalesce(answered_at, %s), session_token = NULL"
            " WHERE payment_id = %s AND state = 'succeeded' AND server_answer <> 'paid'"
            " RETURNING account_id, amount",
            (now, reason, request_id, now, payment_id),
        )
        row = await cursor.fetchone()
        if row is None:
            return False
        account_id, amount = row
        if account_id is not None:
            await unit.execute(
                "UPDATE accounts SET balance = balance + %s, updated_at = %s WHERE account_id = %s",
                (amount, now, account_id),
            )
        await unit.execute("DELETE FROM callback_outbox WHERE payment_id = %s", (payment_id,))
        return True


async def record_paid(
    conn: AsyncConnection, payment_id: uuid.UUID, server_payment_id: str, now: datetime
) -> bool:
    """The server kept the payment: record its answer and end the callback, in
    one transaction. False when the answer was recorded already (a duplicate
    answer) or the payment is refunded (which the server's idempotent answers
    make impossible; the caller logs it)."""
    async with unit_on(conn) as unit:
        cursor = await unit.execute(
            "UPDATE payments SET server_answer = 'paid', server_payment_id = %s,"
            " answered_at = %s, session_token = NULL"
            " WHERE payment_id = %s AND state = 'succeeded' AND server_answer = 'pending'"
            " RETURNING 1",
            (server_payment_id, now, payment_id),
        )
        changed = await cursor.fetchone() is not None
        await unit.execute("DELETE FROM callback_outbox WHERE payment_id = %s", (payment_id,))
        return changed


async def lease_due_callbacks(
    conn: AsyncConnection, now: datetime, lease_until: datetime, limit: int
) -> list[DueCallback]:
    """Claim up to `limit` due callbacks: push each one's next attempt to
    lease_until (the call's deadline and a margin) and count the attempt, in
    one statement (autocommit). A module that dies mid-call sends it again once
    the lease lapses; two dispatchers never take the same row (SKIP LOCKED)."""
    cursor = await conn.execute(
        """
        WITH due AS (
            SELECT payment_id FROM callback_outbox
             WHERE next_attempt_at <= %(now)s
             ORDER BY next_attempt_at
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED
        ), leased AS (
            UPDATE callback_outbox o SET next_attempt_at = %(lease)s
              FROM due WHERE o.payment_id = due.payment_id
            RETURNING o.payment_id
        )
        UPDATE payments p SET callback_attempts = p.callback_attempts + 1
          FROM leased WHERE p.payment_id = leased.payment_id
        RETURNING p.payment_id, p.reservation_id, p.amount, p.session_token, p.callback_attempts
        """,
        {"now": now, "lease": lease_until, "limit": limit},
    )
    return [DueCallback(*row) for row in await cursor.fetchall()]


async def list_payments(
    conn: AsyncConnection,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[PaymentRow]:
    """Payments created in [start, end), after the (created_at, payment_id)
    position `after`, in that order, at most `limit` (autocommit read; the
    payments_by_creation index serves it)."""
    cursor = await conn.execute(
        f"SELECT {PAYMENT_COLUMNS} FROM payments"
        " WHERE (%(start)s::timestamptz IS NULL OR created_at >= %(start)s)"
        "   AND (%(end)s::timestamptz IS NULL OR created_at < %(end)s)"
        "   AND (%(after_at)s::timestamptz IS NULL"
        "        OR (created_at, payment_id) > (%(after_at)s, %(after_id)s::uuid))"
        " ORDER BY created_at, payment_id LIMIT %(limit)s",
        {
            "start": start,
            "end": end,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return [PaymentRow(*row) for row in await cursor.fetchall()]


async def retry_later(
    conn: AsyncConnection, payment_id: uuid.UUID, at: datetime, error: str
) -> None:
    """Schedule the callback's next attempt (autocommit)."""
    await conn.execute(
        "UPDATE callback_outbox SET next_attempt_at = %s, last_error = %s WHERE payment_id = %s",
        (at, error[:500], payment_id),
    )


async def pending_callbacks(conn: AsyncConnection) -> int:
    """How many payments the server has not answered yet (autocommit read)."""
    cursor = await conn.execute("SELECT count(*) FROM callback_outbox")
    return int(await _one(cursor))


async def _one(cursor: Any) -> Any:
    row = await cursor.fetchone()
    assert row is not None
    return row[0]
