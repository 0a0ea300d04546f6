"""Shared by the reliability tests: the invariant check, and a booked-and-paid world."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import admin_pb2, payment_pb2, reservation_pb2, wallet_pb2
from server.app import App
from server.invariants import Report, check_invariants
from tests.fans import AdmittedFan, admitted_fan
from tests.support import ADMIN, Stubs

PRICE = 30_000


async def invariants(app: App) -> Report:
    """The invariants now (the app's clock), with one job interval of grace."""
    async with app.ctx.pool.connection() as conn:
        return await check_invariants(
            conn,
            app.ctx.clock.now(),
            expiry_grace=timedelta(seconds=app.ctx.settings.expiry_interval_seconds),
        )


async def assert_invariants(app: App) -> None:
    report = await invariants(app)
    assert report.ok, "\n" + str(report)


def concert_request(
    app: App, *, seats: int = 10, price: int = PRICE
) -> admin_pb2.CreateConcertRequest:
    return concert_request_at(app.ctx.clock.now(), seats=seats, price=price)


def concert_request_at(
    now: datetime, *, seats: int = 10, price: int = PRICE
) -> admin_pb2.CreateConcertRequest:
    """A concert a week after `now`, one date of `seats` seats at `price`."""
    start = Timestamp()
    start.FromDatetime(now + timedelta(days=7))
    return admin_pb2.CreateConcertRequest(
        title="Reliability Night",
        venue="Loopback Hall",
        dates=[
            admin_pb2.ConcertDateSpec(
                start_time=start,
                seats=[admin_pb2.SeatSpec(seat_number=n, price=price) for n in range(1, seats + 1)],
            )
        ],
    )


@dataclass
class World:
    """A concert date, and a fan who paid for seat 1 and holds seat 2."""

    date_id: str
    fan: AdmittedFan
    paid_reservation_id: str
    payment_id: str
    held_reservation_id: str


async def booked_world(app: App, stubs: Stubs) -> World:
    concert = await stubs.admin.CreateConcert(concert_request(app), metadata=ADMIN)
    date_id = concert.dates[0].date_id
    fan = await admitted_fan(stubs)
    await stubs.wallet.Charge(
        wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=2 * PRICE), metadata=ADMIN
    )
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=2), metadata=fan.metadata
    )
    paid = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1), metadata=fan.metadata
    )
    payment = await stubs.payment.Pay(
        payment_pb2.PayRequest(
            reservation_id=paid.reservation.reservation_id, request_id=str(uuid.uuid4())
        ),
        metadata=fan.metadata,
    )
    return World(
        date_id,
        fan,
        paid.reservation.reservation_id,
        payment.payment.payment_id,
        held.reservation.reservation_id,
    )
