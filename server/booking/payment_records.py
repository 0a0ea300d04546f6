"""The rows of a payment, shared by both ways of paying.

server/booking/payments.py pays through a PaymentGateway in three steps;
server/booking/wallet_payment.py pays from the in-database wallet in one
transaction. Both answer with the same Payment message, store answers under the
same AIP-155 scope and count their sales with the same statements.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from concert.v1 import payment_pb2
from server.booking.concerts import timestamp
from server.db.unit_of_work import Lock, LockKind, RequestRecord, UnitOfWork
from server.errors import FailedPrecondition
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
        "RESERVATION_NOT_HELD", f"the reservation cannot be paid: {why}; nothing was kept"
    )


def payment_message(row: Any) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=str(row[0]),
        reservation_id=str(row[1]),
        user_id=str(row[2]),
        amount=row[3],
        state=_STATES[row[4]],
        create_time=timestamp(row[5]),
    )


PAYMENT_COLUMNS = "id, reservation_id, user_id, amount, state, created_at"


@dataclass(frozen=True)
class Sale:
    """A confirmation's share of the shared counters, counted last (count_sales)."""

    date_id: uuid.UUID
    token_id: uuid.UUID


async def count_sales(unit: UnitOfWork, sales: list[Sale], now: datetime) -> None:
    """The rows every payment shares, as the last statement of its unit of work.

    concert_dates.sold_seat_count (one row per date) and the queue's
    completed_count (one row in all) serialise every payment: each Pay holds
    their locks from this statement to its COMMIT. So the fan's own token is
    ended first, and the two counters and the queue's NOTIFY then go in ONE
    statement, sent with the COMMIT (UnitOfWork.commit_with), so the locks
    are never held across a round trip (docs/load-test-report.md, Round 3). A
    token the expiry job ended first is not counted again.
    """
    for sale in sales:
        expires_at = await store.end_token(unit, sale.token_id, "completed", now)
        completed = [] if expires_at is None else [(sale.token_id, expires_at)]
        params = {"date": sale.date_id, **store.completion_params(completed, now)}
        locks = [Lock.of(LockKind.CONCERT_DATE, sale.date_id), Lock.of(LockKind.QUEUE_STATE)]
        if sale is sales[-1]:
            await unit.commit_with(_COUNT_SALE, params, locks=locks)
        else:
            await unit.execute(_COUNT_SALE, params, locks=locks)


_COUNT_SALE = (
    "WITH sold AS ("
    "  UPDATE concert_dates SET sold_seat_count = sold_seat_count + 1 WHERE id = %(date)s"
    f"), {store.ADD_COMPLETED_CTE}"
    f" SELECT {store.NOTIFY_STATE_CHANGE} FROM state"
)
