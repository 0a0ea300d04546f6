"""Pay with the fan's wallet in this database: the debit and the sale in ONE transaction.

The three-step Pay of server/booking/payments.py exists because a payment
module outside the database cannot join our transaction: an attempt row is
committed first, the money moves, then a confirmation (or a refund) follows,
and a reconciliation job repairs what a crash leaves between them. The default
payment module is the wallet, whose rows live in the same database, so none of
that is needed: one transaction checks the token and the hold, takes the
money, records the charge in the gateway's book, sells the seat, records the
payment and completes the token. Either all of it commits or none of it does:
no charge can be orphaned, no refund is ever needed, and a Pay is 8 round
trips instead of about 21 (docs/load-test-report.md, Round 3).

The rows written are the same as the three-step path's (a 'confirmed'
attempt, a 'charged' gateway charge, the ledger entry, the payment), so the
invariants, GetPayment and the books read both alike.

Lock order (docs/concurrency.md): the token, the reservation, then in one
statement the wallet and the seat, then the shared counters last.
"""

from __future__ import annotations

import uuid

from psycopg import AsyncConnection

from concert.v1 import payment_pb2
from server.booking.holds import reservation_not_found
from server.booking.payment_records import (
    PAYMENT_COLUMNS,
    Sale,
    count_sales,
    pay_scope,
    payment_message,
    reservation_not_held,
)
from server.context import ServiceContext
from server.db.committing import transaction
from server.errors import FailedPrecondition
from server.fan import Fan
from server.idempotency import run_once
from server.queue.completion import insist_live
from server.queue.store import TOKEN_COLUMNS, TokenRow

# The token's row lock, then the reservation's (the MATERIALIZED CTE runs
# first: the reservation's scan waits on it through the EXISTS). One row per
# token; the reservation's columns are NULL when the fan has no such one.
_LOCK_TOKEN_AND_RESERVATION = f"""
    WITH t AS MATERIALIZED (
        SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE id = %(token)s FOR UPDATE
    ), r AS MATERIALIZED (
        SELECT state, expires_at, price, date_id, seat_number FROM reservations
         WHERE id = %(reservation)s AND user_id = %(user)s AND EXISTS (SELECT FROM t)
           FOR UPDATE
    )
    SELECT t.*, r.* FROM t LEFT JOIN r ON true
"""

# Everything the sale writes, guarded by the debit: if the wallet holds less
# than the price, the UPDATE of wallets matches nothing and no other part
# writes. A free seat (price 0) moves no money and so writes no ledger entry.
_DEBIT_AND_SELL = f"""
    WITH debit AS (
        UPDATE wallets SET balance = balance - %(amount)s, updated_at = %(now)s
         WHERE user_id = %(user)s AND balance >= %(amount)s
        RETURNING user_id, balance
    ), entry AS (
        INSERT INTO wallet_ledger (user_id, amount, kind, reference, balance_after, created_at)
        SELECT user_id, -%(amount)s, 'payment', %(key)s, balance, %(now)s
          FROM debit WHERE %(amount)s > 0
    ), charge AS (
        INSERT INTO gateway_charges (key, user_id, amount, state, created_at, updated_at)
        SELECT %(key)s, %(user)s, %(amount)s, 'charged', %(now)s, %(now)s FROM debit
    ), attempt AS (
        INSERT INTO payment_attempts (id, reservation_id, user_id, token_id, amount,
                                      request_id, state, created_at, updated_at)
        SELECT %(key)s, %(reservation)s, %(user)s, %(token)s, %(amount)s,
               %(request_id)s, 'confirmed', %(now)s, %(now)s FROM debit
    ), seat AS (
        UPDATE seats SET sold = true, held_until = NULL
         WHERE date_id = %(date)s AND seat_number = %(seat)s
           AND reservation_id = %(reservation)s AND NOT sold AND held_until > %(now)s
           AND EXISTS (SELECT FROM debit)
        RETURNING 1
    ), payment AS (
        INSERT INTO payments (id, reservation_id, user_id, amount, charge_key, state, created_at)
        SELECT %(payment)s, %(reservation)s, %(user)s, %(amount)s, %(key)s, 'completed', %(now)s
          FROM debit
        RETURNING {PAYMENT_COLUMNS}
    ), paid AS (
        UPDATE reservations SET state = 'paid'
         WHERE id = %(reservation)s AND EXISTS (SELECT FROM debit)
    )
    SELECT EXISTS (SELECT FROM debit), EXISTS (SELECT FROM seat), payment.*
      FROM (SELECT) AS one LEFT JOIN payment ON true
"""


class SaleNotWritten(Exception):
    """The seat moved although its reservation was locked and held: a bug; nothing is kept."""


async def pay_from_wallet(
    ctx: ServiceContext,
    fan: Fan,
    reservation_id: uuid.UUID,
    request_id: uuid.UUID | None,
    request: payment_pb2.PayRequest,
) -> payment_pb2.PayResponse:
    sales: list[Sale] = []
    paid_token: list[TokenRow] = []
    now = ctx.clock.now()  # replaced once the locks are held (below)

    async def execute(conn: AsyncConnection) -> payment_pb2.PayResponse:
        nonlocal now
        cursor = await conn.execute(
            _LOCK_TOKEN_AND_RESERVATION,
            {"token": fan.token_id, "reservation": reservation_id, "user": fan.user_id},
        )
        row = await cursor.fetchone()
        # The time is read after the wait for the pool and the locks: a hold
        # that lapsed meanwhile is seen as lapsed, not sold on an old clock.
        now = ctx.clock.now()
        token = TokenRow(*row[:6]) if row else None
        insist_live(token, now, fan)
        assert row is not None and token is not None
        state, expires_at, price, date_id, seat_number = row[6:]
        if state is None:
            raise reservation_not_found()
        if state == "held" and expires_at <= now:
            state = "expired"
        if state != "held":
            raise reservation_not_held(f"it is {state}")
        cursor = await conn.execute(
            _DEBIT_AND_SELL,
            {
                "amount": price,
                "now": now,
                "user": fan.user_id,
                "key": uuid.uuid4(),
                "reservation": reservation_id,
                "token": fan.token_id,
                "request_id": request_id,
                "date": date_id,
                "seat": seat_number,
                "payment": uuid.uuid4(),
            },
        )
        written = await cursor.fetchone()
        assert written is not None
        debited, sold = written[0], written[1]
        if not debited:
            raise FailedPrecondition(
                "INSUFFICIENT_BALANCE",
                "the wallet holds less than the price",
                metadata={"price": str(price)},
            )
        if not sold:
            if expires_at <= ctx.clock.now():
                # The hold ran out between our lock and the sale, and another
                # fan took the seat: the debit rolls back with the rest.
                raise reservation_not_held("it expired")
            raise SaleNotWritten(reservation_id)
        sales.append(Sale(date_id, fan.token_id))
        paid_token.append(token)
        return payment_pb2.PayResponse(payment=payment_message(written[2:]))

    async with ctx.pool.connection() as conn, transaction(conn):
        response = await run_once(
            conn,
            ctx.clock,
            scope=pay_scope(fan.user_id),
            request_id=request_id,
            request=request,
            response_type=payment_pb2.PayResponse,
            execute=lambda: execute(conn),
        )
        # Last, after the stored answer: the counters every payment shares,
        # with the COMMIT in the same message (server/db/committing.py).
        await count_sales(conn, sales, now, commit=True)
    for token in paid_token:  # committed: every call of this process refuses it from now
        ctx.queue.completed_here(token.token_id, token.expires_at)
    return response
