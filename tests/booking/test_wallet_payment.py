"""Pay from the in-database wallet: one transaction, all of it or none of it.

The default gateway takes this path (server/booking/wallet_payment.py); the
three-step path is exercised by test_payment_faults.py's FaultyGateway.
"""

from __future__ import annotations

import uuid

import pytest

from concert.v1 import payment_pb2, reservation_pb2
from server.app import App
from server.booking import payments, wallet_payment
from server.booking.concerts import create_concert
from server.booking.gateway import WalletGateway
from server.booking.holds import hold_seat
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
    assert type(app.ctx.gateway) is WalletGateway
    fan, reservation_id = await held_seat(app, balance=100_000)

    response = await payments.pay(
        app.ctx, fan, payment_pb2.PayRequest(reservation_id=reservation_id)
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
        await payments.pay(app.ctx, fan, payment_pb2.PayRequest(reservation_id=reservation_id))

    assert refused.value.reason == "INSUFFICIENT_BALANCE"
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


async def test_a_failure_after_the_debit_rolls_the_money_back_with_everything_else(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last statements (the shared counters) fail: the debit must not survive them."""
    fan, reservation_id = await held_seat(app, balance=100_000)

    async def counters_fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away before COMMIT")

    monkeypatch.setattr(wallet_payment, "count_sales", counters_fail)
    with pytest.raises(RuntimeError):
        await payments.pay(
            app.ctx,
            fan,
            payment_pb2.PayRequest(reservation_id=reservation_id, request_id=str(uuid.uuid4())),
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
