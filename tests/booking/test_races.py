"""Races through the public API, real concurrent clients; assertions on the final DB state."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from concert.v1 import payment_pb2, reservation_pb2, wallet_pb2
from server.app import App
from tests.booking.helpers import concert_request, money_totals, scalar
from tests.fans import AdmittedFan, admitted_fan
from tests.support import ADMIN, Stubs, error_details

pytestmark = pytest.mark.slow


async def admitted_fans(stubs: Stubs, count: int) -> list[AdmittedFan]:
    fans: list[AdmittedFan] = []
    for start in range(0, count, 100):
        fans += await asyncio.gather(*(admitted_fan(stubs) for _ in range(min(100, count - start))))
    return fans


async def outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        details = error_details(error)
        return f"{details.code.name}:{details.reason}"
    return "OK"


async def test_a_thousand_fans_race_for_one_seat_and_one_wins(app: App, stubs: Stubs) -> None:
    concert = await stubs.admin.CreateConcert(concert_request(app.ctx, seats=5), metadata=ADMIN)
    date_id = concert.dates[0].date_id
    fans = await admitted_fans(stubs, 1000)

    results = await asyncio.gather(
        *(
            outcome(
                stubs.reservation.ReserveSeat(
                    reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=3),
                    metadata=fan.metadata,
                )
            )
            for fan in fans
        )
    )

    assert results.count("OK") == 1
    assert set(results) == {"OK", "ALREADY_EXISTS:SEAT_UNAVAILABLE"}
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM reservations") == 1
        winner = results.index("OK")
        assert await scalar(
            conn,
            "SELECT s.reservation_id = r.id AND r.user_id = %s FROM seats s"
            " JOIN reservations r ON r.date_id = s.date_id AND r.seat_number = s.seat_number"
            " WHERE s.date_id = %s AND s.seat_number = 3",
            uuid.UUID(fans[winner].user_id),
            uuid.UUID(date_id),
        )


async def test_two_hundred_fans_over_fifty_seats_never_share_a_seat(app: App, stubs: Stubs) -> None:
    concert = await stubs.admin.CreateConcert(concert_request(app.ctx, seats=50), metadata=ADMIN)
    date_id = concert.dates[0].date_id
    fans = await admitted_fans(stubs, 200)
    seat_of = [1 + (i * 7) % 50 for i in range(200)]  # four fans per seat, interleaved

    results = await asyncio.gather(
        *(
            outcome(
                stubs.reservation.ReserveSeat(
                    reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=seat),
                    metadata=fan.metadata,
                )
            )
            for fan, seat in zip(fans, seat_of, strict=True)
        )
    )

    assert results.count("OK") == 50
    winners = {(fans[i].user_id, seat_of[i]) for i, r in enumerate(results) if r == "OK"}
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT r.user_id::text, r.seat_number FROM reservations r"
            " JOIN seats s ON s.reservation_id = r.id"
        )
        held = set(await cursor.fetchall())
        assert await scalar(conn, "SELECT count(*) FROM reservations") == 50
    assert held == winners
    assert len({seat for _, seat in held}) == 50


async def test_concurrent_pays_of_one_reservation_make_one_payment_and_one_debit(
    app: App, stubs: Stubs
) -> None:
    concert = await stubs.admin.CreateConcert(
        concert_request(app.ctx, seats=1, price=30_000), metadata=ADMIN
    )
    fan = await admitted_fan(stubs)
    await stubs.wallet.Charge(
        wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=100_000), metadata=ADMIN
    )
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
        metadata=fan.metadata,
    )
    reservation_id = held.reservation.reservation_id

    results = await asyncio.gather(
        *(
            outcome(
                stubs.payment.Pay(
                    payment_pb2.PayRequest(
                        reservation_id=reservation_id, request_id=str(uuid.uuid4())
                    ),
                    metadata=fan.metadata,
                )
            )
            for _ in range(20)
        )
    )

    assert results.count("OK") == 1
    assert set(results) <= {
        "OK",
        "ABORTED:PAYMENT_IN_PROGRESS",
        "FAILED_PRECONDITION:RESERVATION_NOT_HELD",
        "FAILED_PRECONDITION:TOKEN_COMPLETED",
        "UNAUTHENTICATED:TOKEN_INVALID",
        "UNAUTHENTICATED:TOKEN_EXPIRED",
    }
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM payments") == 1
        assert await scalar(conn, "SELECT count(*) FROM wallet_ledger WHERE kind = 'payment'") == 1
        assert await scalar(conn, "SELECT count(*) FROM wallet_ledger WHERE kind = 'refund'") == 0
        assert await scalar(conn, "SELECT balance FROM wallets") == 70_000
        assert await scalar(conn, "SELECT state FROM reservations") == "paid"
        assert await scalar(conn, "SELECT sold FROM seats") is True
    totals = await money_totals(app.ctx)
    assert totals["balances"] == totals["ledger"] == 70_000
    assert totals["mismatched"] == 0


async def test_a_hundred_concurrent_charges_add_up_exactly(app: App, stubs: Stubs) -> None:
    fan = await admitted_fan(stubs)
    amounts = [1_000 + i for i in range(100)]

    results = await asyncio.gather(
        *(
            outcome(
                stubs.wallet.Charge(
                    wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=amount),
                    metadata=fan.session_metadata,
                )
            )
            for amount in amounts
        )
    )

    assert results == ["OK"] * 100
    balance = await stubs.wallet.GetBalance(
        wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=fan.session_metadata
    )
    assert balance.balance == sum(amounts)
    totals = await money_totals(app.ctx)
    assert totals["ledger"] == totals["balances"] == totals["charges"] == sum(amounts)
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM wallet_ledger") == 100
