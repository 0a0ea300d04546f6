"""Pay from the in-database wallet: one transaction, all of it or none of it.

The default gateway takes this path (server/booking/wallet_payment.py); the
three-step path is exercised by test_payment_faults.py's FaultyGateway.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from concert.v1 import payment_pb2, reservation_pb2
from concert.v1.error_reason_pb2 import ErrorReason
from server.app import App
from server.booking import payments, wallet_payment
from server.booking.concerts import create_concert
from server.booking.gateway import WalletGateway
from server.booking.holds import hold_seat
from server.db.unit_of_work import Statement
from server.errors import ServiceError
from server.fan import Fan
from tests.booking.helpers import concert_request, make_fan, scalar
from tests.reliability.helpers import assert_invariants

PRICE = 30_000


async def held_seat(app: App, balance: int) -> tuple[Fan, str]:
    concert = await create_concert(app.ctx, concert_request(app.ctx, seats=2, price=PRICE))
    fan = await make_fan(app.ctx, balance=balance)
    held = await hold_seat(
        app.ctx,
        app.booking,
        fan,
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
    )
    return fan, held.reservation.reservation_id


async def rows(app: App, fan: Fan) -> dict[str, object]:
    async with app.ctx.pool.connection() as conn:
        return {
            "balance": await scalar(
                conn, "SELECT balance FROM wallets WHERE user_id = %s", fan.user_id
            ),
            "attempts": await scalar(
                conn,
                "SELECT array_agg(state) FROM payment_attempts WHERE user_id = %s",
                fan.user_id,
            ),
            "charges": await scalar(
                conn,
                "SELECT array_agg(state || ':' || amount) FROM gateway_charges WHERE user_id = %s",
                fan.user_id,
            ),
            "ledger": await scalar(
                conn,
                "SELECT array_agg(amount ORDER BY id) FROM wallet_ledger WHERE user_id = %s",
                fan.user_id,
            ),
            "payments": await scalar(
                conn, "SELECT count(*) FROM payments WHERE user_id = %s", fan.user_id
            ),
            "reservation": await scalar(
                conn, "SELECT state FROM reservations WHERE user_id = %s", fan.user_id
            ),
            "sold": await scalar(conn, "SELECT sold_seat_count FROM concert_dates"),
            "token": await scalar(
                conn, "SELECT state FROM queue_tokens WHERE id = %s", fan.token_id
            ),
        }


async def test_the_default_gateway_pays_in_one_transaction_with_the_usual_rows(app: App) -> None:
    assert type(app.booking.gateway) is WalletGateway
    assert app.booking.gateway.in_this_database
    fan, reservation_id = await held_seat(app, balance=100_000)

    response = await payments.pay(
        app.ctx, app.booking, fan, payment_pb2.PayRequest(reservation_id=reservation_id)
    )

    assert response.payment.amount == PRICE
    assert await rows(app, fan) == {
        "balance": 70_000,
        "attempts": ["confirmed"],
        "charges": [f"charged:{PRICE}"],
        "ledger": [100_000, -PRICE],
        "payments": 1,
        "reservation": "paid",
        "sold": 1,
        "token": "completed",
    }
    await assert_invariants(app)


async def test_a_wallet_short_of_the_price_writes_nothing(app: App) -> None:
    fan, reservation_id = await held_seat(app, balance=PRICE - 1)

    with pytest.raises(ServiceError) as refused:
        await payments.pay(
            app.ctx, app.booking, fan, payment_pb2.PayRequest(reservation_id=reservation_id)
        )

    assert refused.value.reason == ErrorReason.ERROR_REASON_INSUFFICIENT_BALANCE
    assert await rows(app, fan) == {
        "balance": PRICE - 1,
        "attempts": None,
        "charges": None,
        "ledger": [PRICE - 1],
        "payments": 0,
        "reservation": "held",
        "sold": 0,
        "token": "live",
    }
    await assert_invariants(app)


@pytest.mark.parametrize("with_request_id", [True, False])
async def test_a_failure_after_the_debit_rolls_the_money_back_with_everything_else(
    app: App, monkeypatch: pytest.MonkeyPatch, with_request_id: bool
) -> None:
    """The last statement (the shared counters) fails in PostgreSQL, in the same
    message as the sale (no request id) or in the second one (with an id): the
    debit must not survive it."""
    fan, reservation_id = await held_seat(app, balance=100_000)

    def counters_fail(*args: object, **kwargs: object) -> Statement:
        return Statement("SELECT 1 / 0")  # the database refuses the last statement

    monkeypatch.setattr(wallet_payment, "count_sale", counters_fail)
    request_id = str(uuid.uuid4()) if with_request_id else ""
    with pytest.raises(psycopg.errors.DivisionByZero):
        await payments.pay(
            app.ctx,
            app.booking,
            fan,
            payment_pb2.PayRequest(reservation_id=reservation_id, request_id=request_id),
        )

    assert await rows(app, fan) == {
        "balance": 100_000,
        "attempts": None,
        "charges": None,
        "ledger": [100_000],
        "payments": 0,
        "reservation": "held",
        "sold": 0,
        "token": "live",
    }
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM idempotency_keys") == 0
    await assert_invariants(app)


async def test_a_hold_that_lapses_while_pay_waits_for_its_lock_is_not_held_not_internal(
    app: App, database_url: str
) -> None:
    """Pay reads the time after its locks. A Pay stuck behind a lock while its
    hold runs out and another fan takes the seat answers RESERVATION_NOT_HELD,
    takes no money, and sells nothing (it used to sell on the time it started
    with, find the seat gone and answer INTERNAL)."""
    import asyncio

    import psycopg

    from server.errors import FailedPrecondition
    from tests.queue.test_issue import wait_for_lock_wait

    fan, reservation_id = await held_seat(app, balance=PRICE)
    date_id = await _date_of(app, reservation_id)
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        await blocker.execute(
            "SELECT 1 FROM reservations WHERE id = %s FOR UPDATE", (reservation_id,)
        )
        paying = asyncio.ensure_future(
            payments.pay(
                app.ctx, app.booking, fan, payment_pb2.PayRequest(reservation_id=reservation_id)
            )
        )
        await wait_for_lock_wait(blocker)
        app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]
        other = await make_fan(app.ctx, balance=PRICE)
        await hold_seat(
            app.ctx,
            app.booking,
            other,
            reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1),
        )
        await blocker.rollback()
        with pytest.raises(FailedPrecondition) as refused:
            await paying
    assert refused.value.reason == ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    assert (await rows(app, fan))["balance"] == PRICE
    await assert_invariants(app)


async def _date_of(app: App, reservation_id: str) -> str:
    async with app.ctx.pool.connection() as conn:
        return str(
            await scalar(conn, "SELECT date_id FROM reservations WHERE id = %s", reservation_id)
        )
