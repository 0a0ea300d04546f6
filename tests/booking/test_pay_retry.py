"""A Pay whose reply was lost is retried with the token that paid (AIP-155)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from concert.v1 import concert_pb2, payment_pb2, reservation_pb2, wallet_pb2
from server.app import App
from tests.booking.helpers import concert_request, scalar
from tests.fans import admitted_fan
from tests.support import ADMIN, Stubs, error_details


async def test_the_paying_token_can_retry_its_pay_and_read_the_result_but_nothing_more(
    app: App, stubs: Stubs
) -> None:
    concert = await stubs.admin.CreateConcert(
        concert_request(app.ctx, seats=2, price=20_000), metadata=ADMIN
    )
    date_id = concert.dates[0].date_id
    fan = await admitted_fan(stubs)
    await stubs.wallet.Charge(
        wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=50_000), metadata=ADMIN
    )
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1), metadata=fan.metadata
    )
    pay = payment_pb2.PayRequest(
        reservation_id=held.reservation.reservation_id, request_id=str(uuid.uuid4())
    )
    first = await stubs.payment.Pay(pay, metadata=fan.metadata)

    # The token is used up, yet the same request answers the same payment...
    again = await stubs.payment.Pay(pay, metadata=fan.metadata)
    assert again == first
    shown = await stubs.payment.GetPayment(
        payment_pb2.GetPaymentRequest(payment_id=first.payment.payment_id), metadata=fan.metadata
    )
    assert shown.payment == first.payment
    reservation = await stubs.reservation.GetReservation(
        reservation_pb2.GetReservationRequest(reservation_id=held.reservation.reservation_id),
        metadata=fan.metadata,
    )
    assert reservation.reservation.state == reservation_pb2.RESERVATION_STATE_PAID

    # ...while anything new with it is refused.
    new_pay = payment_pb2.PayRequest(
        reservation_id=held.reservation.reservation_id, request_id=str(uuid.uuid4())
    )
    for call in (
        stubs.payment.Pay(new_pay, metadata=fan.metadata),
        stubs.concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(date_id=date_id), metadata=fan.metadata
        ),
        stubs.reservation.ReserveSeat(
            reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=2),
            metadata=fan.metadata,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        details = error_details(refused.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "TOKEN_COMPLETED",
        )

    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM payments") == 1
        assert await scalar(conn, "SELECT count(*) FROM wallet_ledger WHERE kind = 'payment'") == 1
        assert await scalar(conn, "SELECT balance FROM wallets") == 30_000
