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

from psycopg import AsyncConnection

from concert.v1 import payment_pb2
from server.booking.concerts import timestamp
from server.db.committing import execute_then_commit
from server.errors import FailedPrecondition
from server.queue import store

_STATES = {
    "completed": payment_pb2.PAYMENT_STATE_COMPLETED,
    "refunded": payment_pb2.PAYMENT_STATE_REFUNDED,
}


def pay_scope(user_id: uuid.UUID) -> str:
    return f"PaymentService.Pay:{user_id}"


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


async def count_sales(
    conn: AsyncConnection, sales: list[Sale], now: datetime, *, commit: bool = False
) -> None:
    """The rows every payment shares, as the last statement of its transaction.

    concert_dates.sold_seat_count (one row per date) and the queue's
    completed_count (one row in all) serialise every payment: each Pay holds
    their locks from this statement to its COMMIT. So the fan's own token is
    ended first, and the two counters and the queue's NOTIFY then go in ONE
    statement; with commit=True (a transaction opened with
    server.db.committing.transaction) the COMMIT travels with it, so the locks
    are never held across a round trip (docs/load-test-report.md, Round 3). A
    token the expiry job ended first is not counted again.
    """
    for sale in sales:
        expires_at = await store.end_token(conn, sale.token_id, "completed", now)
        completed = [] if expires_at is None else [(sale.token_id, expires_at)]
        params = {"date": sale.date_id, **store.completion_params(completed, now)}
        if commit and sale is sales[-1]:
            await execute_then_commit(conn, _COUNT_SALE, params)
        else:
            await conn.execute(_COUNT_SALE, params)


_COUNT_SALE = (
    "WITH sold AS ("
    "  UPDATE concert_dates SET sold_seat_count = sold_seat_count + 1 WHERE id = %(date)s"
    f"), {store.ADD_COMPLETED_CTE}"
    f" SELECT {store.NOTIFY_STATE_CHANGE} FROM state"
)
