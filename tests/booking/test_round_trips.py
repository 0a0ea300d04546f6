"""ReserveSeat and Pay (the wallet) reach PostgreSQL in at most two round trips,
BEGIN and COMMIT included (issue 14), and a refusal writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from concert.v1 import payment_pb2, reservation_pb2
from concert.v1.error_reason_pb2 import ErrorReason
from server.app import App
from server.booking import payments
from server.booking.concerts import create_concert
from server.booking.holds import hold_seat
from server.db import unit_of_work as uow
from server.errors import ServiceError
from tests.booking.helpers import concert_request, make_fan, scalar

PRICE = 5_000


@pytest.fixture
def units(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[uow.UnitOfWork]]:
    """Every unit of work opened while the test runs."""
    opened: list[uow.UnitOfWork] = []
    real_init = uow.UnitOfWork.__init__

    def recording_init(self: uow.UnitOfWork, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(uow.UnitOfWork, "__init__", recording_init)
    yield opened


def _request_id(with_id: bool) -> str:
    return str(uuid.uuid4()) if with_id else ""


@pytest.mark.parametrize("with_id", [False, True])
async def test_reserve_seat_and_pay_take_at_most_two_round_trips(
    app: App, units: list[uow.UnitOfWork], with_id: bool
) -> None:
    concert = await create_concert(app.ctx, concert_request(app.ctx, seats=2, price=PRICE))
    fan = await make_fan(app.ctx, balance=PRICE)
    units.clear()
    held = await hold_seat(
        app.ctx,
        app.booking,
        fan,
        reservation_pb2.ReserveSeatRequest(
            date_id=concert.dates[0].date_id, seat_number=1, request_id=_request_id(with_id)
        ),
    )
    [reserve] = units
    assert reserve.round_trips == (2 if with_id else 1)
    units.clear()
    paid = await payments.pay(
        app.ctx,
        app.booking,
        fan,
        payment_pb2.PayRequest(
            reservation_id=held.reservation.reservation_id, request_id=_request_id(with_id)
        ),
    )
    [pay] = units
    assert pay.round_trips == (2 if with_id else 1)
    assert paid.payment.amount == PRICE
    async with app.ctx.pool.connection() as conn:
        assert (
            await scalar(conn, "SELECT balance FROM wallets WHERE user_id = %s", fan.user_id) == 0
        )
        assert (
            await scalar(
                conn,
                "SELECT sold_seat_count FROM concert_dates WHERE id = %s",
                concert.dates[0].date_id,
            )
            == 1
        )


async def test_a_refused_reserve_seat_in_one_message_writes_nothing(
    app: App, units: list[uow.UnitOfWork]
) -> None:
    """Sent with its COMMIT, a hold that a check refuses must have written nothing:
    the seat is taken, and the fan's second try leaves no reservation behind."""
    concert = await create_concert(app.ctx, concert_request(app.ctx, seats=1, price=PRICE))
    first, second = await make_fan(app.ctx), await make_fan(app.ctx)
    request = reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1)
    await hold_seat(app.ctx, app.booking, first, request)
    with pytest.raises(ServiceError) as refused:
        await hold_seat(app.ctx, app.booking, second, request)
    assert refused.value.reason == ErrorReason.ERROR_REASON_SEAT_UNAVAILABLE
    assert units[-1].round_trips == 1
    async with app.ctx.pool.connection() as conn:
        assert (
            await scalar(
                conn, "SELECT count(*) FROM reservations WHERE user_id = %s", second.user_id
            )
            == 0
        )
