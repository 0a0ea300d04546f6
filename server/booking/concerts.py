"""Use cases of concerts, dates and seats: create (operator) and browse (fans).

Browsing is the hottest read on on-sale day: each list is one indexed,
keyset-paginated query, whatever the page size. A seat is free when
`NOT sold AND (held_until IS NULL OR held_until <= now)` with the clock's now,
so a hold that ran out frees its seat at once. The lists read through
ctx.read_pool (a streaming replica when CONCERT_DATABASE_READ_URL is set), so
they may trail the last write by the replica's replay delay.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import admin_pb2, concert_pb2
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext
from server.db.unit_of_work import RequestRecord, UnitOfWork, run_once
from server.errors import ErrorReason, NotFound, Violations
from server.validation import (
    decode_page_token,
    encode_page_token,
    parse_page_size,
    parse_request_id,
    parse_uuid,
)

MAX_TITLE_LENGTH = 200
MAX_VENUE_LENGTH = 200
MAX_DATES = 100
MAX_SEATS_PER_DATE = 10_000
# One reply names at most this many bad fields (a 10,000-seat date could
# otherwise produce a reply as large as the request).
MAX_REPORTED_VIOLATIONS = 100


def timestamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


# --- CreateConcert -----------------------------------------------------------


def _check_concert(
    violations: Violations, request: admin_pb2.CreateConcertRequest, now: datetime
) -> None:
    title = request.title.strip()
    if not title:
        violations.add("title", "required")
    elif len(request.title) > MAX_TITLE_LENGTH:
        violations.add("title", f"at most {MAX_TITLE_LENGTH} characters")
    if len(request.venue) > MAX_VENUE_LENGTH:
        violations.add("venue", f"at most {MAX_VENUE_LENGTH} characters")
    if not request.dates:
        violations.add("dates", "at least one date is required")
    elif len(request.dates) > MAX_DATES:
        violations.add("dates", f"at most {MAX_DATES} dates")
    reported = 0

    def add(field: str, description: str) -> None:
        nonlocal reported
        if reported < MAX_REPORTED_VIOLATIONS:
            violations.add(field, description)
        reported += 1

    for i, date in enumerate(request.dates[:MAX_DATES]):
        if not date.HasField("start_time"):
            add(f"dates[{i}].start_time", "required")
        elif (start := _valid_time(date.start_time)) is None:
            add(f"dates[{i}].start_time", "not a valid timestamp")
        elif start <= now:
            add(f"dates[{i}].start_time", "must be in the future")
        if not date.seats:
            add(f"dates[{i}].seats", "at least one seat is required")
        elif len(date.seats) > MAX_SEATS_PER_DATE:
            add(f"dates[{i}].seats", f"at most {MAX_SEATS_PER_DATE:,} seats per date")
            continue
        seen: set[int] = set()
        for j, seat in enumerate(date.seats):
            if seat.seat_number < 1:
                add(f"dates[{i}].seats[{j}].seat_number", "must be 1 or more")
            elif seat.seat_number in seen:
                add(f"dates[{i}].seats[{j}].seat_number", "repeats a seat number of this date")
            seen.add(seat.seat_number)
            if seat.price < 0:
                add(f"dates[{i}].seats[{j}].price", "must not be negative")


def _valid_time(value: Timestamp) -> datetime | None:
    """The moment, or None: the wire allows seconds and nanos ToDatetime refuses."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


async def create_concert(
    ctx: ServiceContext, request: admin_pb2.CreateConcertRequest
) -> admin_pb2.CreateConcertResponse:
    now = ctx.clock.now()
    violations = Violations()
    _check_concert(violations, request, now)
    request_id = parse_request_id(violations, request.request_id)
    violations.raise_if_any()

    async def execute(unit: UnitOfWork) -> admin_pb2.CreateConcertResponse:
        concert_id = uuid.uuid4()
        await unit.execute(
            "INSERT INTO concerts (id, title, venue, created_at) VALUES (%s, %s, %s, %s)",
            (concert_id, request.title.strip(), request.venue.strip(), now),
        )
        dates = []
        for spec in sorted(request.dates, key=lambda d: d.start_time.ToNanoseconds()):
            date_id = uuid.uuid4()
            await unit.execute(
                "INSERT INTO concert_dates (id, concert_id, start_time, total_seat_count)"
                " VALUES (%s, %s, %s, %s)",
                (date_id, concert_id, spec.start_time.ToDatetime(tzinfo=UTC), len(spec.seats)),
            )
            async with (
                unit.conn.cursor() as cursor,
                cursor.copy("COPY seats (date_id, seat_number, price) FROM STDIN") as copy,
            ):
                for seat in spec.seats:
                    await copy.write_row((date_id, seat.seat_number, seat.price))
            dates.append(
                concert_pb2.ConcertDate(
                    date_id=str(date_id),
                    concert_id=str(concert_id),
                    start_time=spec.start_time,
                    available_seat_count=len(spec.seats),
                    total_seat_count=len(spec.seats),
                )
            )
        concert = concert_pb2.Concert(
            concert_id=str(concert_id),
            title=request.title.strip(),
            venue=request.venue.strip(),
            create_time=timestamp(now),
        )
        return admin_pb2.CreateConcertResponse(concert=concert, dates=dates)

    return await run_once(
        ctx.pool,
        ctx.clock,
        RequestRecord(
            "AdminService.CreateConcert", request_id, request, admin_pb2.CreateConcertResponse
        ),
        execute,
    )


# --- Browsing ----------------------------------------------------------------


def _page(rows: list[Any], page_size: int) -> tuple[list[Any], Any | None]:
    """The page's rows and the last one if another page follows."""
    if len(rows) > page_size:
        return rows[:page_size], rows[page_size - 1]
    return rows, None


async def list_concerts(
    ctx: ServiceContext, request: concert_pb2.ListConcertsRequest
) -> concert_pb2.ListConcertsResponse:
    violations = Violations()
    page_size = parse_page_size(violations, request.page_size)
    cursor_position = decode_page_token(violations, request.page_token, frozenset({"t", "id"}))
    after = _time_cursor(violations, cursor_position)
    violations.raise_if_any()
    async with ctx.read_pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT id, title, venue, created_at FROM concerts"
            " WHERE %(t)s::timestamptz IS NULL OR (created_at, id) > (%(t)s, %(id)s)"
            " ORDER BY created_at, id LIMIT %(limit)s",
            {"t": after[0], "id": after[1], "limit": page_size + 1},
        )
        rows, last = _page(await cursor.fetchall(), page_size)
    return concert_pb2.ListConcertsResponse(
        concerts=[
            concert_pb2.Concert(
                concert_id=str(r[0]), title=r[1], venue=r[2], create_time=timestamp(r[3])
            )
            for r in rows
        ],
        next_page_token=""
        if last is None
        else encode_page_token({"t": last[3].isoformat(), "id": str(last[0])}),
    )


def _time_cursor(
    violations: Violations, position: dict[str, Any] | None
) -> tuple[datetime | None, uuid.UUID | None]:
    if position is None:
        return None, None
    try:
        # Field by field, exactly the types encode_page_token writes: a cursor
        # the client edited must fail here, never in SQL.
        if not isinstance(position["t"], str) or not isinstance(position["id"], str):
            raise TypeError
        time = datetime.fromisoformat(position["t"])
        if time.tzinfo is None:
            raise ValueError
        return time, uuid.UUID(position["id"])
    except (TypeError, ValueError, AttributeError):
        violations.add("page_token", "not a page token this method returned")
        return None, None


async def list_available_dates(
    ctx: ServiceContext, request: concert_pb2.ListAvailableDatesRequest
) -> concert_pb2.ListAvailableDatesResponse:
    violations = Violations()
    concert_id = parse_uuid(violations, "concert_id", request.concert_id)
    page_size = parse_page_size(violations, request.page_size)
    position = decode_page_token(violations, request.page_token, frozenset({"c", "t", "id"}))
    if position is not None and position.get("c") != request.concert_id:
        violations.add("page_token", "belongs to another concert")
    after = _time_cursor(violations, position)
    violations.raise_if_any()
    now = ctx.clock.now()
    async with ctx.read_pool.connection() as conn:
        cursor = await conn.execute("SELECT 1 FROM concerts WHERE id = %s", (concert_id,))
        if await cursor.fetchone() is None:
            raise NotFound(ErrorReason.ERROR_REASON_CONCERT_NOT_FOUND, "no such concert")
        # Free = total - sold (a counter kept by payments) - live holds (an
        # index range over this date's held seats): no scan of the seats.
        cursor = await conn.execute(
            """
            SELECT d.id, d.start_time, d.total_seat_count,
                   d.total_seat_count - d.sold_seat_count - held.count AS free
              FROM concert_dates d
             CROSS JOIN LATERAL (
                   SELECT count(*) AS count FROM seats s
                    WHERE s.date_id = d.id AND s.held_until > %(now)s
                   ) held
             WHERE d.concert_id = %(concert)s
               AND d.start_time > %(now)s
               AND (%(t)s::timestamptz IS NULL OR (d.start_time, d.id) > (%(t)s, %(id)s))
               AND d.total_seat_count - d.sold_seat_count - held.count > 0
             ORDER BY d.start_time, d.id
             LIMIT %(limit)s
            """,
            {
                "now": now,
                "concert": concert_id,
                "t": after[0],
                "id": after[1],
                "limit": page_size + 1,
            },
        )
        rows, last = _page(await cursor.fetchall(), page_size)
    return concert_pb2.ListAvailableDatesResponse(
        dates=[
            concert_pb2.ConcertDate(
                date_id=str(r[0]),
                concert_id=str(concert_id),
                start_time=timestamp(r[1]),
                total_seat_count=r[2],
                available_seat_count=r[3],
            )
            for r in rows
        ],
        next_page_token=""
        if last is None
        else encode_page_token(
            {"c": str(concert_id), "t": last[1].isoformat(), "id": str(last[0])}
        ),
    )


async def list_available_seats(
    ctx: ServiceContext, booking: BookingRuntime, request: concert_pb2.ListAvailableSeatsRequest
) -> concert_pb2.ListAvailableSeatsResponse:
    violations = Violations()
    date_id = parse_uuid(violations, "date_id", request.date_id)
    page_size = parse_page_size(violations, request.page_size)
    position = decode_page_token(violations, request.page_token, frozenset({"d", "after"}))
    after = 0
    if position is not None:
        seat = position.get("after")
        # bool is an int to Python, not to PostgreSQL: the exact type, in range.
        if position.get("d") != request.date_id or type(seat) is not int or not 0 <= seat < 2**31:
            violations.add("page_token", "not a page token of this date")
        else:
            after = position["after"]
    violations.raise_if_any()
    assert date_id is not None
    now = ctx.clock.now()
    cache, page_key = booking.seat_lists, (after, page_size)
    cached = cache.get(date_id, page_key, now)
    if cached is not None:
        return cached
    generation = cache.generation(date_id)
    async with ctx.read_pool.connection() as conn:
        # One round trip: no row means no such date; one row of NULLs, a date
        # with no seat free after `after`. The seats are a range of the primary
        # key (date_id, seat_number), filtered. next_expiry, the date's first
        # hold to run out, bounds how long the page may be kept.
        cursor = await conn.execute(
            """
            SELECT s.seat_number, s.price, e.next_expiry FROM concert_dates d
             CROSS JOIN LATERAL (
                SELECT min(held_until) AS next_expiry FROM seats
                 WHERE date_id = d.id AND held_until > %(now)s
              ) e
              LEFT JOIN LATERAL (
                SELECT seat_number, price FROM seats
                 WHERE date_id = d.id AND seat_number > %(after)s
                   AND NOT sold AND (held_until IS NULL OR held_until <= %(now)s)
                 ORDER BY seat_number
                 LIMIT %(limit)s
              ) s ON true
             WHERE d.id = %(date)s
             ORDER BY s.seat_number
            """,
            {"date": date_id, "after": after, "now": now, "limit": page_size + 1},
        )
        found = await cursor.fetchall()
    if not found:
        raise NotFound(ErrorReason.ERROR_REASON_DATE_NOT_FOUND, "no such date")
    rows, last = _page(found if found[0][0] is not None else [], page_size)
    # 100 seats per page: the date's text is made once and each Seat is added
    # in place (a str(uuid) and a message copy per seat cost ~4x as much).
    response = concert_pb2.ListAvailableSeatsResponse(
        next_page_token=""
        if last is None
        else encode_page_token({"d": str(date_id), "after": last[0]})
    )
    date_text = str(date_id)
    add_seat = response.seats.add
    for seat_number, price, _ in rows:
        add_seat(date_id=date_text, seat_number=seat_number, price=price)
    cache.put(date_id, page_key, generation, response, now, found[0][2])
    return response
