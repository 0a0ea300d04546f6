"""Holds, expiry, cancel, and browsing, through the public API (queue gate in front)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import admin_pb2, concert_pb2, reservation_pb2
from server.app import App
from server.booking.install import HOLD_EXPIRY_JOB
from tests.booking.helpers import concert_request, scalar
from tests.fans import AdmittedFan, admitted_fan
from tests.support import ADMIN, Stubs, error_details


async def create(app: App, stubs: Stubs, **kwargs: int) -> admin_pb2.CreateConcertResponse:
    return await stubs.admin.CreateConcert(concert_request(app.ctx, **kwargs), metadata=ADMIN)


async def reserve(
    stubs: Stubs, fan: AdmittedFan, date_id: str, seat: int, request_id: str = ""
) -> reservation_pb2.Reservation:
    reply = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(
            date_id=date_id, seat_number=seat, request_id=request_id
        ),
        metadata=fan.metadata,
    )
    return reply.reservation


async def free_seats(stubs: Stubs, fan: AdmittedFan, date_id: str) -> list[int]:
    reply = await stubs.concert.ListAvailableSeats(
        concert_pb2.ListAvailableSeatsRequest(date_id=date_id), metadata=fan.metadata
    )
    return [s.seat_number for s in reply.seats]


async def failure(call: object) -> tuple[str, str | None, set[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = error_details(caught.value)
    return details.code.name, details.reason, details.bad_fields


async def test_an_expired_hold_frees_the_seat_at_once_and_the_job_tidies_up(
    app: App, stubs: Stubs
) -> None:
    concert = await create(app, stubs, seats=3)
    date_id = concert.dates[0].date_id
    first, second = await admitted_fan(stubs), await admitted_fan(stubs)
    held = await reserve(stubs, first, date_id, 2)
    assert await free_seats(stubs, first, date_id) == [1, 3]
    assert await failure(reserve(stubs, second, date_id, 2)) == (
        "ALREADY_EXISTS",
        "SEAT_UNAVAILABLE",
        set(),
    )

    app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds)  # type: ignore[attr-defined]
    # No job has run: readers and writers already see the seat free.
    assert await free_seats(stubs, second, date_id) == [1, 2, 3]
    shown = await stubs.reservation.GetReservation(
        reservation_pb2.GetReservationRequest(reservation_id=held.reservation_id),
        metadata=first.metadata,
    )
    assert shown.reservation.state == reservation_pb2.RESERVATION_STATE_EXPIRED
    taken = await reserve(stubs, second, date_id, 2)
    assert taken.user_id == second.user_id

    run = await app.ctx.jobs.run_now(HOLD_EXPIRY_JOB)
    assert run.result == 1
    async with app.ctx.pool.connection() as conn:
        assert (
            await scalar(
                conn, "SELECT state FROM reservations WHERE id = %s", uuid.UUID(held.reservation_id)
            )
            == "expired"
        )
        assert await scalar(
            conn,
            "SELECT reservation_id FROM seats WHERE date_id = %s AND seat_number = 2",
            uuid.UUID(date_id),
        ) == uuid.UUID(taken.reservation_id)


async def test_hold_cap_cancel_ownership_and_idempotency(app: App, stubs: Stubs) -> None:
    concert = await create(app, stubs, seats=10)
    date_id = concert.dates[0].date_id
    fan, other = await admitted_fan(stubs), await admitted_fan(stubs)
    cap = app.ctx.settings.max_holds_per_user
    request_id = str(uuid.uuid4())
    first = await reserve(stubs, fan, date_id, 1, request_id)
    assert await reserve(stubs, fan, date_id, 1, request_id) == first  # a retry holds nothing more
    assert (await failure(reserve(stubs, fan, date_id, 2, request_id)))[1] == "REQUEST_ID_REUSED"
    for seat in range(2, cap + 1):
        await reserve(stubs, fan, date_id, seat)
    assert await failure(reserve(stubs, fan, date_id, cap + 1)) == (
        "FAILED_PRECONDITION",
        "HOLD_LIMIT_REACHED",
        set(),
    )

    get = reservation_pb2.GetReservationRequest(reservation_id=first.reservation_id)
    assert (await failure(stubs.reservation.GetReservation(get, metadata=other.metadata)))[1] == (
        "RESERVATION_NOT_FOUND"
    )
    cancel = reservation_pb2.CancelReservationRequest(reservation_id=first.reservation_id)
    assert (await failure(stubs.reservation.CancelReservation(cancel, metadata=other.metadata)))[
        1
    ] == "RESERVATION_NOT_FOUND"
    cancelled = await stubs.reservation.CancelReservation(cancel, metadata=fan.metadata)
    assert cancelled.reservation.state == reservation_pb2.RESERVATION_STATE_CANCELLED
    assert await failure(stubs.reservation.CancelReservation(cancel, metadata=fan.metadata)) == (
        "FAILED_PRECONDITION",
        "RESERVATION_NOT_HELD",
        set(),
    )
    assert 1 in await free_seats(stubs, other, date_id)
    await reserve(stubs, fan, date_id, cap + 1)  # the cancelled hold no longer counts

    assert await failure(reserve(stubs, other, date_id, 99)) == (
        "NOT_FOUND",
        "SEAT_NOT_FOUND",
        set(),
    )
    assert (await failure(reserve(stubs, other, "nope", 0)))[2] == {"date_id", "seat_number"}


async def test_create_concert_names_every_bad_field(app: App, stubs: Stubs) -> None:
    past, future = Timestamp(), Timestamp()
    past.FromDatetime(app.ctx.clock.now() - timedelta(minutes=1))
    future.FromDatetime(app.ctx.clock.now() + timedelta(days=1))
    request = admin_pb2.CreateConcertRequest(
        title="  ",
        venue="v" * 201,
        dates=[
            admin_pb2.ConcertDateSpec(start_time=past, seats=[admin_pb2.SeatSpec(seat_number=1)]),
            admin_pb2.ConcertDateSpec(start_time=future),
            admin_pb2.ConcertDateSpec(
                start_time=future,
                seats=[
                    admin_pb2.SeatSpec(seat_number=1, price=-5),
                    admin_pb2.SeatSpec(seat_number=1),
                    admin_pb2.SeatSpec(seat_number=0),
                ],
            ),
            admin_pb2.ConcertDateSpec(
                start_time=future,
                seats=[admin_pb2.SeatSpec(seat_number=n) for n in range(1, 10_002)],
            ),
        ],
        request_id="not-a-uuid",
    )
    code, reason, fields = await failure(stubs.admin.CreateConcert(request, metadata=ADMIN))
    assert (code, reason) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert fields == {
        "title",
        "venue",
        "dates[0].start_time",
        "dates[1].seats",
        "dates[2].seats[0].price",
        "dates[2].seats[1].seat_number",
        "dates[2].seats[2].seat_number",
        "dates[3].seats",
        "request_id",
    }
    assert (await failure(stubs.admin.CreateConcert(request)))[0] == "UNAUTHENTICATED"
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM concerts") == 0


async def test_create_concert_is_idempotent(app: App, stubs: Stubs) -> None:
    request = concert_request(app.ctx, seats=3)
    request.request_id = str(uuid.uuid4())
    first = await stubs.admin.CreateConcert(request, metadata=ADMIN)
    assert await stubs.admin.CreateConcert(request, metadata=ADMIN) == first
    request.title = "Another"
    assert (await failure(stubs.admin.CreateConcert(request, metadata=ADMIN)))[1] == (
        "REQUEST_ID_REUSED"
    )
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM concerts") == 1
        assert await scalar(conn, "SELECT count(*) FROM seats") == 3


async def test_browsing_pages_through_concerts_dates_and_free_seats(app: App, stubs: Stubs) -> None:
    concerts = [await create(app, stubs, seats=5, dates=3) for _ in range(3)]
    fan = await admitted_fan(stubs)

    seen, token = [], ""
    while True:
        page = await stubs.concert.ListConcerts(
            concert_pb2.ListConcertsRequest(page_size=2, page_token=token), metadata=fan.metadata
        )
        seen += [c.concert_id for c in page.concerts]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(c.concert.concert_id for c in concerts)

    target = concerts[0]
    first_date = target.dates[0].date_id
    await reserve(stubs, fan, first_date, 1)
    await reserve(stubs, fan, first_date, 4)
    dates, token = [], ""
    while True:
        page = await stubs.concert.ListAvailableDates(
            concert_pb2.ListAvailableDatesRequest(
                concert_id=target.concert.concert_id, page_size=2, page_token=token
            ),
            metadata=fan.metadata,
        )
        dates += list(page.dates)
        token = page.next_page_token
        if not token:
            break
    assert [d.date_id for d in dates] == [d.date_id for d in target.dates]
    assert [d.available_seat_count for d in dates] == [3, 5, 5]
    assert all(d.total_seat_count == 5 for d in dates)

    seats, token = [], ""
    while True:
        page = await stubs.concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(
                date_id=first_date, page_size=2, page_token=token
            ),
            metadata=fan.metadata,
        )
        seats += [s.seat_number for s in page.seats]
        token = page.next_page_token
        if not token:
            break
    assert seats == [2, 3, 5]

    assert await failure(
        stubs.concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(date_id=str(uuid.uuid4())), metadata=fan.metadata
        )
    ) == ("NOT_FOUND", "DATE_NOT_FOUND", set())
    assert await failure(
        stubs.concert.ListAvailableDates(
            concert_pb2.ListAvailableDatesRequest(concert_id=str(uuid.uuid4())),
            metadata=fan.metadata,
        )
    ) == ("NOT_FOUND", "CONCERT_NOT_FOUND", set())
    assert (
        await failure(
            stubs.concert.ListAvailableSeats(
                concert_pb2.ListAvailableSeatsRequest(
                    date_id=first_date, page_size=-1, page_token="garbage"
                ),
                metadata=fan.metadata,
            )
        )
    )[2] == {"page_size", "page_token"}
