"""The rows of a payment, shared by both ways of paying.

server/booking/payments.py pays through a PaymentGateway in three steps;
server/booking/wallet_payment.py pays from the in-database wallet in one
transaction. Both answer with the same Payment message, store answers under the
same AIP-155 scope and count their sales with the same statements.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from concert.v1 import payment_pb2
from server.booking.concerts import timestamp
from server.db.unit_of_work import Lock, LockKind, RequestRecord, Statement
from server.errors import ErrorReason, FailedPrecondition
from server.queue import store

_STATES = {
    "completed": payment_pb2.PAYMENT_STATE_COMPLETED,
    "refunded": payment_pb2.PAYMENT_STATE_REFUNDED,
}


def pay_record(
    user_id: uuid.UUID, request_id: uuid.UUID | None, request: payment_pb2.PayRequest
) -> RequestRecord[payment_pb2.PayResponse]:
    """Pay's AIP-155 record: one scope per fan, whichever path pays."""
    return RequestRecord(
        f"PaymentService.Pay:{user_id}", request_id, request, payment_pb2.PayResponse
    )


def reservation_not_held(why: str) -> FailedPrecondition:
    return FailedPrecondition(
        ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD,
        f"the reservation cannot be paid: {why}; nothing was kept",
    )


def payment_message(row: Any) -> payment_pb2.Payment:
    """A Payment from PAYMENT_COLUMNS, or REFUSED_MODULE_PAYMENT_COLUMNS (whose
    ninth column is the refund reason)."""
    return payment_pb2.Payment(
        payment_id=str(row[0]),
        reservation_id=str(row[1]) if row[1] is not None else "",
        user_id=str(row[2]),
        amount=row[3],
        state=_STATES[row[4]],
        create_time=timestamp(row[5]),
        payment_module=row[6],
        module_payment_id=row[7],
        refund_reason=row[8] if len(row) > 8 else "",
    )


# The built-in payment module's name: the fan's wallet (PaymentService.Pay).
WALLET_MODULE = "wallet"
PAYMENT_COLUMNS = (
    "id, reservation_id, user_id, amount, state, created_at,"
    f" coalesce(module_id, '{WALLET_MODULE}'), coalesce(module_payment_id, '')"
)


# A module payment the server refused, read as a refunded Payment
# (payment_message): the refund request's row, with its reason ninth.
REFUSED_MODULE_PAYMENT_COLUMNS = (
    "payment_id, reservation_id, user_id, amount, 'refunded', created_at,"
    " module_id, module_payment_id, reason"
)


def count_sale(payment_id: uuid.UUID, token_id: uuid.UUID | None, now: datetime) -> Statement:
    """A payment's share of the rows every payment shares, as one statement.

    concert_dates.sold_seat_count (one row per date) and the queue's
    completed_count (one row in all) serialise every payment: each Pay holds
    their locks from this statement to its COMMIT. So the statement ends the
    paying token (if still live: one the expiry job ended first is not counted
    again), moves the two counters and sends the queue's NOTIFY at once, and a
    use case sends it last, in the message that carries the COMMIT
    (UnitOfWork.send(..., commit=True)): the locks are never held across a
    round trip (docs/load-test-report.md, Round 3). token_id None: the payer
    holds no live token (a module's callback after it lapsed); none is ended.
    It counts nothing unless
    the payment row was written earlier in the transaction, so it may be sent
    in the same message as the sale it counts.
    """
    return Statement(
        _COUNT_SALE,
        {"payment": payment_id, "token": token_id, "now": now},
        (
            *([Lock.of(LockKind.QUEUE_TOKEN, token_id)] if token_id is not None else []),
            Lock.of(LockKind.CONCERT_DATE),
            Lock.of(LockKind.QUEUE_STATE),
        ),
    )


_ENDED_TOKENS_JSON = (
    "(SELECT coalesce(json_agg(json_build_array(id::text, expires_at)), '[]'::json) FROM ended)"
)
_COUNT_SALE = f"""
    WITH sale AS (
        SELECT r.date_id FROM payments p JOIN reservations r ON r.id = p.reservation_id
         WHERE p.id = %(payment)s
    ), ended AS (
        UPDATE queue_tokens SET state = 'completed', ended_at = %(now)s
         WHERE id = %(token)s AND state = 'live' AND EXISTS (SELECT FROM sale)
        RETURNING id, expires_at
    ), sold AS (
        UPDATE concert_dates SET sold_seat_count = sold_seat_count + 1
         WHERE id = (SELECT date_id FROM sale)
    ), {store.add_completed_cte("(SELECT count(*) FROM ended)")}
    SELECT {store.notify_state_change(_ENDED_TOKENS_JSON)} FROM state
"""
