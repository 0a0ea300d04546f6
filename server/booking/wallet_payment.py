"""Pay with the fan's wallet in this database: the debit and the sale in ONE transaction.

The three-step Pay of server/booking/payments.py exists because a payment
module outside the database cannot join our transaction: an attempt row is
committed first, the money moves, then a confirmation (or a refund) follows,
and a reconciliation job repairs what a crash leaves between them. The default
payment module is the wallet, whose rows live in the same database, so none of
that is needed: one transaction checks the token and the hold, takes the
money, records the charge in the gateway's book, sells the seat, records the
payment and completes the token. Either all of it commits or none of it does:
no charge can be orphaned and no refund is ever needed.

A Pay is one round trip (two with a request id): the locks, the sale and its
count go to PostgreSQL in one message with BEGIN and COMMIT. The sale writes
nothing unless every check passes (its SQL guards say what insist_live and
hold_state say, tests/queue/test_live_token_guard.py), so the message may
commit before Python has read why a refusal was refused; with a request id the
answer is stored, and the counters counted, in a second message with COMMIT
(docs/load-test-report.md, Round 6).

The rows written are the same as the three-step path's (a 'confirmed'
attempt, a 'charged' gateway charge, the ledger entry, the payment), so the
invariants, GetPayment and the books read both alike.

Lock order (server/db/unit_of_work.LockKind): the token, the reservation and
the wallet in one statement, then the seat, then the shared counters last.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NoReturn

from concert.v1 import payment_pb2
from server.booking.holds import (
    NOW_AFTER_LOCKS,
    held_reservation_guard,
    hold_state,
    reservation_not_found,
)
from server.booking.payment_records import (
    PAYMENT_COLUMNS,
    count_sale,
    pay_record,
    payment_message,
    reservation_not_held,
)
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext
from server.db.unit_of_work import (
    UNANSWERED_GUARD,
    Lock,
    LockKind,
    Statement,
    UnitOfWork,
    unit_of_work,
)
from server.errors import ErrorReason, FailedPrecondition
from server.fan import Fan
from server.queue.completion import LIVE_TOKEN_GUARD, insist_live, live_token_params
from server.queue.store import TOKEN_COLUMNS, TokenRow, token_row
from server.wallet import ledger

# The token's row lock, then the reservation's, then the wallet's (each
# MATERIALIZED CTE runs before the next one's scan, which waits on it through
# the EXISTS). One row per token; the reservation's columns are NULL when the
# fan has no such one, the balance NULL when it has no wallet.
_LOCK_TOKEN_RESERVATION_AND_WALLET = f"""
    WITH t AS MATERIALIZED (
        SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE id = %(token)s FOR UPDATE
    ), r AS MATERIALIZED (
        SELECT state, expires_at, price, date_id, seat_number FROM reservations
         WHERE id = %(reservation)s AND user_id = %(user)s AND EXISTS (SELECT FROM t)
           FOR UPDATE
    ), w AS MATERIALIZED (
        SELECT balance FROM wallets
         WHERE user_id = %(user)s AND EXISTS (SELECT FROM r) FOR UPDATE
    )
    SELECT t.*, r.*, w.balance FROM t LEFT JOIN r ON true LEFT JOIN w ON true
"""

# Everything the sale writes, in one statement after the locks (its snapshot
# therefore sees the locked rows as they now stand), in a chain where each
# part writes only if the one before it did: the seat is sold only if the
# fan's token is live, the reservation the fan's and held, the wallet (locked)
# holds the price and the request was not answered before; the wallet's move
# and ledger row (server/wallet/ledger.py) only if the seat was sold; the
# gateway's charge, the confirmed attempt, the payment and the reservation's
# state only if the money moved. So either all of it is written or none of it:
# the statement may be sent in the same message as COMMIT.
#
# The hold is judged at NOW_AFTER_LOCKS (issue 13: a hold that ran out while
# the locks waited is not sold), and that time is returned first in the one
# row, beside the payment's columns (NULL when nothing was sold), so that
# _refuse explains a refusal with the time the sale decided with. The token
# is judged, like insist_live, at the call's %(now)s, which also dates the
# rows written: a record of the call, earlier than any expiry it was sold
# under.
_SELL_AND_DEBIT = f"""
    WITH seat AS (
        UPDATE seats s SET sold = true, held_until = NULL
          FROM reservations r
         WHERE r.id = %(reservation)s AND r.user_id = %(user)s
           AND {held_reservation_guard(NOW_AFTER_LOCKS)}
           AND s.date_id = r.date_id AND s.seat_number = r.seat_number
           AND s.reservation_id = r.id AND NOT s.sold AND s.held_until > {NOW_AFTER_LOCKS}
           AND {LIVE_TOKEN_GUARD}
           AND EXISTS (SELECT FROM wallets w WHERE w.user_id = %(user)s AND w.balance >= r.price)
           AND {UNANSWERED_GUARD}
        RETURNING r.price
    ), {ledger.move_and_record("-(SELECT price FROM seat)", "EXISTS (SELECT FROM seat)")},
    charge AS (
        INSERT INTO gateway_charges (key, user_id, amount, state, created_at, updated_at)
        SELECT %(reference)s, %(user)s, price, 'charged', %(now)s, %(now)s
          FROM seat WHERE EXISTS (SELECT FROM moved)
    ), attempt AS (
        INSERT INTO payment_attempts (id, reservation_id, user_id, token_id, amount,
                                      request_id, state, created_at, updated_at)
        SELECT %(reference)s, %(reservation)s, %(user)s, %(token)s, price,
               %(request_id)s, 'confirmed', %(now)s, %(now)s
          FROM seat WHERE EXISTS (SELECT FROM moved)
    ), payment AS (
        INSERT INTO payments (id, reservation_id, user_id, amount, charge_key, state, created_at)
        SELECT %(payment)s, %(reservation)s, %(user)s, price, %(reference)s,
               'completed', %(now)s
          FROM seat WHERE EXISTS (SELECT FROM moved)
        RETURNING {PAYMENT_COLUMNS}
    ), paid AS (
        UPDATE reservations SET state = 'paid'
         WHERE id = %(reservation)s AND EXISTS (SELECT FROM moved)
    )
    SELECT {NOW_AFTER_LOCKS}, payment.* FROM (SELECT) AS one LEFT JOIN payment ON true
"""


class SaleNotWritten(Exception):
    """Every check passed but the sale was not written: a bug; nothing is kept."""


async def pay_from_wallet(
    ctx: ServiceContext,
    booking: BookingRuntime,
    fan: Fan,
    reservation_id: uuid.UUID,
    request_id: uuid.UUID | None,
    request: payment_pb2.PayRequest,
) -> payment_pb2.PayResponse:
    """At most two round trips: BEGIN, the request's key (with an id), the locks,
    the sale and, with no request id, its count and COMMIT in one message; with
    an id, the stored answer, the count and COMMIT in a second."""
    record = pay_record(fan.user_id, request_id, request)
    payment_id = uuid.uuid4()
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        # Read once the connection is ours: the sale adds only the time since BEGIN.
        now = ctx.clock.now()
        params = {
            **ledger.entry_params(fan.user_id, None, ledger.EntryKind.PAYMENT, uuid.uuid4(), now),
            **live_token_params(fan, now),
            **UnitOfWork.unanswered_params(record),
            "reservation": reservation_id,
            "payment": payment_id,
        }
        count = count_sale(payment_id, fan.token_id, now)
        key = unit.record_statement(record)
        results = await unit.send(
            *([key] if key else []),
            Statement(
                _LOCK_TOKEN_RESERVATION_AND_WALLET,
                params,
                (
                    Lock.of(LockKind.QUEUE_TOKEN, fan.token_id),
                    Lock.of(LockKind.RESERVATION, reservation_id),
                    Lock.of(LockKind.WALLET, fan.user_id),
                ),
            ),
            Statement(_SELL_AND_DEBIT, params, (Lock.of(LockKind.SEAT),)),
            *([] if key else [count]),
            commit=key is None,
        )
        if key is not None and (replay := await unit.replayed(record, results[0])) is not None:
            return replay
        locked, [(decided_at, *sold)] = results[-3:-1] if key is None else results[-2:]
        token = token_row(locked)
        if sold[0] is None:  # nothing was written: say why
            _refuse(ctx, fan, token, locked, now, decided_at)
        response = payment_pb2.PayResponse(payment=payment_message(sold))
        if key is not None:
            remember = unit.remember_statement(record, response)
            assert remember is not None
            await unit.send(remember, count, commit=True)
    # Committed: every call of this process refuses the token from now.
    assert token is not None
    booking.token_completed(token.token_id, token.expires_at)
    return response


def _refuse(
    ctx: ServiceContext,
    fan: Fan,
    token: TokenRow | None,
    locked: list[Any],
    now: datetime,
    decided_at: datetime,
) -> NoReturn:
    """Why the sale was not written, from what the locks read: the token at the
    call's `now`, the hold at `decided_at` (the time the sale judged it with,
    or later), as _SELL_AND_DEBIT does."""
    insist_live(token, now, fan)
    state, expires_at, price, _date, _seat, balance = locked[0][6:]
    if state is None:
        raise reservation_not_found()
    if (state := hold_state(state, expires_at, decided_at)) != "held":
        # Among them a hold that ran out while the locks waited.
        raise reservation_not_held(f"it is {state}")
    if balance is None or balance < price:
        raise FailedPrecondition(
            ErrorReason.ERROR_REASON_INSUFFICIENT_BALANCE,
            "the wallet holds less than the price",
            metadata={"price": str(price)},
        )
    if expires_at <= ctx.clock.now():
        # The hold ran out while the sale waited for the seat, and another
        # fan took it.
        raise reservation_not_held("it expired")
    raise SaleNotWritten(fan.token_id)
