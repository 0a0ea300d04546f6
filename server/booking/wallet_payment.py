"""Pay with the fan's wallet in this database: the debit and the sale in ONE transaction.

The three-step Pay of server/booking/payments.py exists because a payment
module outside the database cannot join our transaction: an attempt row is
committed first, the money moves, then a confirmation (or a refund) follows,
and a reconciliation job repairs what a crash leaves between them. The default
payment module is the wallet, whose rows live in the same database, so none of
that is needed: one transaction checks the token and the hold, takes the
money, records the charge in the gateway's book, sells the seat, records the
payment and completes the token. Either all of it commits or none of it does:
no charge can be orphaned, no refund is ever needed, and a Pay is 7 round
trips instead of about 21 (docs/load-test-report.md, Round 3).

The rows written are the same as the three-step path's (a 'confirmed'
attempt, a 'charged' gateway charge, the ledger entry, the payment), so the
invariants, GetPayment and the books read both alike.

Lock order (docs/concurrency.md): the token, the reservation, then in one
statement the wallet and the seat, then the shared counters last.
"""

from __future__ import annotations

import uuid

from concert.v1 import payment_pb2
from server.booking.holds import hold_state, reservation_not_found
from server.booking.payment_records import (
    PAYMENT_COLUMNS,
    Sale,
    count_sales,
    pay_record,
    payment_message,
    reservation_not_held,
)
from server.context import ServiceContext
from server.db.unit_of_work import Lock, LockKind, unit_of_work
from server.errors import FailedPrecondition
from server.fan import Fan
from server.queue.completion import insist_live
from server.queue.store import TOKEN_COLUMNS, TokenRow
from server.wallet import ledger

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

# Everything the sale writes, guarded by the debit (the wallet's own move and
# ledger row, server/wallet/ledger.py): if the wallet holds less than the
# price, the UPDATE of wallets matches nothing and no other part writes. A
# free seat (price 0) moves no money and so writes no ledger entry.
_DEBIT_AND_SELL = f"""
    WITH {ledger.MOVE_AND_RECORD}, charge AS (
        INSERT INTO gateway_charges (key, user_id, amount, state, created_at, updated_at)
        SELECT %(reference)s, %(user_id)s, %(amount)s, 'charged', %(now)s, %(now)s FROM moved
    ), attempt AS (
        INSERT INTO payment_attempts (id, reservation_id, user_id, token_id, amount,
                                      request_id, state, created_at, updated_at)
        SELECT %(reference)s, %(reservation)s, %(user_id)s, %(token)s, %(amount)s,
               %(request_id)s, 'confirmed', %(now)s, %(now)s FROM moved
    ), seat AS (
        UPDATE seats SET sold = true, held_until = NULL
         WHERE date_id = %(date)s AND seat_number = %(seat)s
           AND reservation_id = %(reservation)s AND NOT sold AND held_until > %(now)s
           AND EXISTS (SELECT FROM moved)
        RETURNING 1
    ), payment AS (
        INSERT INTO payments (id, reservation_id, user_id, amount, charge_key, state, created_at)
        SELECT %(payment)s, %(reservation)s, %(user_id)s, %(amount)s, %(reference)s,
               'completed', %(now)s
          FROM moved
        RETURNING {PAYMENT_COLUMNS}
    ), paid AS (
        UPDATE reservations SET state = 'paid'
         WHERE id = %(reservation)s AND EXISTS (SELECT FROM moved)
    )
    SELECT EXISTS (SELECT FROM moved), EXISTS (SELECT FROM seat), payment.*
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
    record = pay_record(fan.user_id, request_id, request)
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        if (replay := await unit.replay(record)) is not None:
            return replay
        cursor = await unit.execute(
            _LOCK_TOKEN_AND_RESERVATION,
            {"token": fan.token_id, "reservation": reservation_id, "user": fan.user_id},
            locks=[
                Lock.of(LockKind.QUEUE_TOKEN, fan.token_id),
                Lock.of(LockKind.RESERVATION, reservation_id),
            ],
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
        if (state := hold_state(state, expires_at, now)) != "held":
            raise reservation_not_held(f"it is {state}")
        cursor = await unit.execute(
            _DEBIT_AND_SELL,
            {
                **ledger.entry_params(
                    fan.user_id, -price, ledger.EntryKind.PAYMENT, uuid.uuid4(), now
                ),
                "amount": price,
                "reservation": reservation_id,
                "token": fan.token_id,
                "request_id": request_id,
                "date": date_id,
                "seat": seat_number,
                "payment": uuid.uuid4(),
            },
            locks=[
                Lock.of(LockKind.WALLET, fan.user_id),
                Lock.of(LockKind.SEAT, f"{date_id}/{seat_number}"),
            ],
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
        response = await unit.remember(
            record, payment_pb2.PayResponse(payment=payment_message(written[2:]))
        )
        # Last, after the stored answer: the counters every payment shares,
        # sent with the COMMIT.
        await count_sales(unit, [Sale(date_id, fan.token_id)], now)
    # Committed: every call of this process refuses the token from now.
    ctx.queue.completed_here(token.token_id, token.expires_at)
    return response
