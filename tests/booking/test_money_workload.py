"""A randomised concurrent workload, then the books: nothing created, nothing lost."""

from __future__ import annotations

import asyncio
import random
import uuid

import grpc
import pytest

from concert.v1 import payment_pb2, reservation_pb2, wallet_pb2
from server.app import App
from tests.booking.helpers import concert_request, money_totals, scalar
from tests.booking.test_races import admitted_fans
from tests.fans import AdmittedFan
from tests.support import ADMIN, Stubs

pytestmark = pytest.mark.slow


async def test_randomised_workload_keeps_the_books_exact(app: App, stubs: Stubs) -> None:
    rng = random.Random(20240601)
    concert = await stubs.admin.CreateConcert(
        concert_request(app.ctx, seats=30, price=25_000), metadata=ADMIN
    )
    date_id = concert.dates[0].date_id
    fans = await admitted_fans(stubs, 40)

    async def swallow(call: object) -> object:
        try:
            return await call  # type: ignore[misc]
        except grpc.aio.AioRpcError:
            return None

    async def fan_session(fan: AdmittedFan) -> None:
        for _ in range(6):
            action = rng.random()
            if action < 0.3:
                await swallow(
                    stubs.wallet.Charge(
                        wallet_pb2.ChargeRequest(
                            user_id=fan.user_id, amount=rng.randint(1, 60_000)
                        ),
                        metadata=fan.session_metadata,
                    )
                )
            else:
                held = await swallow(
                    stubs.reservation.ReserveSeat(
                        reservation_pb2.ReserveSeatRequest(
                            date_id=date_id, seat_number=rng.randint(1, 30)
                        ),
                        metadata=fan.metadata,
                    )
                )
                if held is None:
                    continue
                reservation_id = held.reservation.reservation_id  # type: ignore[attr-defined]
                if rng.random() < 0.2:
                    await swallow(
                        stubs.reservation.CancelReservation(
                            reservation_pb2.CancelReservationRequest(reservation_id=reservation_id),
                            metadata=fan.metadata,
                        )
                    )
                    continue
                request = payment_pb2.PayRequest(
                    reservation_id=reservation_id, request_id=str(uuid.uuid4())
                )
                # Some fans double-click: the same Pay twice at once.
                copies = 2 if rng.random() < 0.3 else 1
                await asyncio.gather(
                    *(
                        swallow(stubs.payment.Pay(request, metadata=fan.metadata))
                        for _ in range(copies)
                    )
                )

    await asyncio.gather(*(fan_session(fan) for fan in fans))
    # Whatever was left mid-flight is settled by the jobs.
    app.ctx.clock.advance(3600)  # type: ignore[attr-defined]
    await app.ctx.jobs.run_now("payment-reconciliation")
    await app.ctx.jobs.run_now("hold-expiry")

    totals = await money_totals(app.ctx)
    assert totals["charges"] > 0 and totals["payments"] > 0
    # charges - payments taken + refunds == sum of balances == sum of the ledger
    assert totals["charges"] - totals["debits"] + totals["refunds"] == totals["balances"]
    # Money kept is exactly the completed payments: nothing kept without a seat.
    assert totals["debits"] - totals["refunds"] == totals["payments"]
    assert totals["balances"] == totals["ledger"]
    assert totals["mismatched"] == 0
    async with app.ctx.pool.connection() as conn:
        assert (
            await scalar(
                conn,
                "SELECT count(*) FROM payment_attempts WHERE state IN ('charging', 'refunding')",
            )
            == 0
        )
        # Each sold seat has exactly one completed payment, and vice versa.
        assert await scalar(conn, "SELECT count(*) FROM seats WHERE sold") == await scalar(
            conn, "SELECT count(*) FROM payments"
        )
        assert await scalar(conn, "SELECT sum(sold_seat_count) FROM concert_dates") == await scalar(
            conn, "SELECT count(*) FROM payments"
        )
