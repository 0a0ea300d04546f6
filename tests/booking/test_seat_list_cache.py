"""ListAvailableSeats pages from memory: what they may get wrong, and for how long.

Through the public API on real PostgreSQL; "another process" is played by SQL
written straight to the tables, which this process's cache cannot hear of.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from concert.v1 import admin_pb2, concert_pb2, reservation_pb2
from server.app import App
from server.booking.seat_list_cache import SeatListCache
from tests.booking.helpers import concert_request
from tests.fans import AdmittedFan, admitted_fan
from tests.support import ADMIN, Stubs

MAX_AGE = 1.0  # seconds: the default CONCERT_SEAT_LIST_MAX_AGE_MS


async def free_seats(stubs: Stubs, fan: AdmittedFan, date_id: str) -> list[int]:
    reply = await stubs.concert.ListAvailableSeats(
        concert_pb2.ListAvailableSeatsRequest(date_id=date_id), metadata=fan.metadata
    )
    return [s.seat_number for s in reply.seats]


async def one_date(app: App, stubs: Stubs, seats: int = 4) -> str:
    concert: admin_pb2.CreateConcertResponse = await stubs.admin.CreateConcert(
        concert_request(app.ctx, seats=seats), metadata=ADMIN
    )
    return concert.dates[0].date_id


async def hold_elsewhere(app: App, date_id: str, seat: int, seconds: float) -> None:
    """A hold as another server process writes it (this one hears nothing)."""
    now = app.ctx.clock.now()
    async with app.ctx.pool.connection() as conn:
        await conn.execute(
            "UPDATE seats SET held_until = %s, reservation_id = %s"
            " WHERE date_id = %s AND seat_number = %s",
            (now + timedelta(seconds=seconds), uuid.uuid4(), date_id, seat),
        )


async def test_a_page_is_served_from_memory_and_this_processs_hold_shows_at_once(
    app: App, stubs: Stubs
) -> None:
    date_id = await one_date(app, stubs)
    fan = await admitted_fan(stubs)
    cache = app.booking.seat_lists

    assert await free_seats(stubs, fan, date_id) == [1, 2, 3, 4]
    hits = cache.hits
    assert await free_seats(stubs, fan, date_id) == [1, 2, 3, 4]
    assert cache.hits == hits + 1

    await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=2), metadata=fan.metadata
    )
    assert await free_seats(stubs, fan, date_id) == [1, 3, 4]


async def test_another_processs_hold_shows_within_the_max_age(app: App, stubs: Stubs) -> None:
    date_id = await one_date(app, stubs)
    fan = await admitted_fan(stubs)
    assert await free_seats(stubs, fan, date_id) == [1, 2, 3, 4]

    await hold_elsewhere(app, date_id, 3, seconds=300)
    assert await free_seats(stubs, fan, date_id) == [1, 2, 3, 4]  # the page in memory
    app.ctx.clock.advance(MAX_AGE)  # type: ignore[attr-defined]
    assert await free_seats(stubs, fan, date_id) == [1, 2, 4]


async def test_a_page_is_never_kept_past_the_first_hold_to_run_out(app: App, stubs: Stubs) -> None:
    date_id = await one_date(app, stubs)
    fan = await admitted_fan(stubs)
    await hold_elsewhere(app, date_id, 1, seconds=0.25)
    assert await free_seats(stubs, fan, date_id) == [2, 3, 4]

    app.ctx.clock.advance(0.25)  # type: ignore[attr-defined]
    assert await free_seats(stubs, fan, date_id) == [1, 2, 3, 4]


def test_a_page_read_before_an_invalidation_is_not_stored_after_it() -> None:
    cache = SeatListCache(timedelta(seconds=1))
    date_id = uuid.uuid4()
    now = datetime(2026, 11, 24, tzinfo=UTC)
    generation = cache.generation(date_id)
    cache.invalidate(date_id)  # a hold commits while the page is being read
    cache.put(date_id, (0, 100), generation, concert_pb2.ListAvailableSeatsResponse(), now, None)
    assert cache.get(date_id, (0, 100), now) is None

    cache.put(
        date_id,
        (0, 100),
        cache.generation(date_id),
        concert_pb2.ListAvailableSeatsResponse(),
        now,
        None,
    )
    assert cache.get(date_id, (0, 100), now) is not None
    assert cache.get(date_id, (0, 100), now + timedelta(seconds=1)) is None


def test_max_age_zero_keeps_nothing() -> None:
    cache = SeatListCache(timedelta(0))
    date_id = uuid.uuid4()
    now = datetime(2026, 11, 24, tzinfo=UTC)
    cache.put(date_id, (0, 100), 0, concert_pb2.ListAvailableSeatsResponse(), now, None)
    assert cache.get(date_id, (0, 100), now) is None


def _page(seats: int) -> concert_pb2.ListAvailableSeatsResponse:
    date = str(uuid.uuid4())
    return concert_pb2.ListAvailableSeatsResponse(
        seats=[concert_pb2.Seat(date_id=date, seat_number=n, price=1000) for n in range(seats)]
    )


def test_the_cache_is_bounded_in_bytes_and_drops_expired_pages_first() -> None:
    """Page keys are the client's choice (any start seat, any size): what bounds the
    memory is bytes. Expired pages go first, then the least recently used."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    page = _page(100)
    budget = 10 * page.ByteSize()
    cache = SeatListCache(timedelta(seconds=1), max_bytes=budget)
    date = uuid.uuid4()
    for after in range(10):
        cache.put(date, (after, 100), cache.generation(date), page, now, None)
    assert cache.bytes == budget
    # A client walks a thousand distinct keys: the budget holds, always.
    for after in range(10, 1_010):
        cache.put(date, (after, 100), cache.generation(date), page, now, None)
        assert cache.bytes <= budget
    # The most recent pages are kept; the oldest went.
    assert cache.get(date, (1_009, 100), now) is not None
    assert cache.get(date, (0, 100), now) is None
    # Expired pages are dropped before a live one is evicted.
    later = now + timedelta(seconds=2)  # every page put at `now` has expired
    other = uuid.uuid4()
    fresh = later - timedelta(seconds=0.5)
    cache.put(other, (0, 100), cache.generation(other), page, fresh, None)  # the oldest live one
    for after in range(9):
        cache.put(date, (after, 50), cache.generation(date), page, later, None)
    assert cache.get(other, (0, 100), later) is not None  # kept: the expired went instead
    # A page larger than the whole budget is never kept.
    cache.put(date, (0, 1000), cache.generation(date), _page(2_000), later, None)
    assert cache.get(date, (0, 1000), later) is None
    # Invalidation drops the date's pages and their bytes.
    cache.invalidate(date)
    assert cache.bytes == cache._pages[(other, (0, 100))].size


async def test_clients_choosing_every_page_key_cannot_grow_the_cache_past_its_bytes(
    app: App, stubs: Stubs
) -> None:
    """Real calls, concurrent, each with a page size of its own (a page's key is
    the client's choice): the cache stays within its byte budget at every step,
    and every answer is still the right page."""
    date_id = await one_date(app, stubs, seats=300)
    fan = await admitted_fan(stubs)
    cache = app.booking.seat_lists
    cache.max_bytes = 32 * 1024  # a few dozen pages of this date

    async def page_of(size: int) -> int:
        reply = await stubs.concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(date_id=date_id, page_size=size),
            metadata=fan.metadata,
        )
        return len(reply.seats)

    for first in range(1, 301, 20):
        sizes = range(first, first + 20)
        assert await asyncio.gather(*(page_of(size) for size in sizes)) == list(sizes)
        assert cache.bytes <= cache.max_bytes
    assert cache.bytes > cache.max_bytes // 2  # it was full, not bypassed
