"""ListAvailableSeats pages kept in memory (server/booking/seat_list_cache.py), keyed by cursor.

A page is keyed by (date, (after seat, page size)), the decoded page token and
size; it is served until max_age has passed or the date's first hold runs out,
whichever comes first; this process's own change of a date drops its pages,
and a page read before that change is never stored after it; memory is
bounded in serialized bytes, expired pages going first, then the least
recently used. tests/booking/test_seat_list_cache.py covers it end to end.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from concert.v1 import concert_pb2
from server.booking.seat_list_cache import SeatListCache
from tests.unit.helpers import NOW

DATE = uuid.UUID("3f1c8a52-6a3b-4b6f-9a53-2b2b7b1d9a10")
OTHER_DATE = uuid.UUID("11111111-1111-4111-8111-111111111111")
SECOND = timedelta(seconds=1)


def page(*seats: int) -> concert_pb2.ListAvailableSeatsResponse:
    response = concert_pb2.ListAvailableSeatsResponse(next_page_token="t")
    for seat in seats:
        response.seats.add(date_id=str(DATE), seat_number=seat, price=1000)
    return response


def test_a_page_is_served_until_its_max_age_then_missed() -> None:
    cache = SeatListCache(SECOND)
    cache.put(DATE, (0, 100), cache.generation(DATE), page(1, 2), NOW, None)
    assert cache.get(DATE, (0, 100), NOW + SECOND - timedelta(microseconds=1)) == page(1, 2)
    assert cache.get(DATE, (0, 100), NOW + SECOND) is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.bytes == 0  # the expired page is dropped when found, not kept till a put


def test_a_page_is_keyed_by_date_start_seat_and_page_size() -> None:
    cache = SeatListCache(SECOND)
    cache.put(DATE, (0, 100), 0, page(1), NOW, None)
    assert cache.get(DATE, (0, 100), NOW) == page(1)
    assert cache.get(DATE, (1, 100), NOW) is None
    assert cache.get(DATE, (0, 50), NOW) is None
    assert cache.get(OTHER_DATE, (0, 100), NOW) is None


def test_a_page_is_never_kept_past_the_dates_first_hold_expiry() -> None:
    cache = SeatListCache(SECOND)
    expiry = NOW + timedelta(milliseconds=300)
    cache.put(DATE, (0, 100), 0, page(1), NOW, expiry)
    assert cache.get(DATE, (0, 100), expiry - timedelta(microseconds=1)) == page(1)
    assert cache.get(DATE, (0, 100), expiry) is None


def test_a_hold_expiring_after_max_age_does_not_lengthen_the_pages_life() -> None:
    cache = SeatListCache(SECOND)
    cache.put(DATE, (0, 100), 0, page(1), NOW, NOW + timedelta(minutes=5))
    assert cache.get(DATE, (0, 100), NOW + SECOND) is None


def test_a_change_here_drops_the_dates_pages_and_no_other() -> None:
    cache = SeatListCache(SECOND)
    cache.put(DATE, (0, 100), 0, page(1), NOW, None)
    cache.put(OTHER_DATE, (0, 100), 0, page(2), NOW, None)
    cache.invalidate(DATE)
    assert cache.get(DATE, (0, 100), NOW) is None
    assert cache.get(OTHER_DATE, (0, 100), NOW) == page(2)
    assert cache.bytes == page(2).ByteSize()


def test_a_page_read_before_a_change_is_not_stored_after_it() -> None:
    cache = SeatListCache(SECOND)
    generation = cache.generation(DATE)  # the page's query starts
    cache.invalidate(DATE)  # a hold commits meanwhile
    cache.put(DATE, (0, 100), generation, page(1), NOW, None)
    assert cache.get(DATE, (0, 100), NOW) is None
    cache.put(DATE, (0, 100), cache.generation(DATE), page(1), NOW, None)
    assert cache.get(DATE, (0, 100), NOW) == page(1)


def test_a_max_age_of_zero_keeps_nothing() -> None:
    cache = SeatListCache(timedelta(0))
    assert not cache.enabled
    cache.put(DATE, (0, 100), 0, page(1), NOW, None)
    assert cache.get(DATE, (0, 100), NOW - SECOND) is None
    assert cache.bytes == 0


def test_memory_is_bounded_in_bytes_expired_pages_go_first_then_the_least_recently_used() -> None:
    one = page(*range(1, 11)).ByteSize()
    cache = SeatListCache(SECOND, max_bytes=3 * one)
    later = NOW + timedelta(milliseconds=200)
    cache.put(DATE, (0, 10), 0, page(*range(1, 11)), NOW, None)  # the least recently used
    cache.put(DATE, (10, 10), 0, page(*range(11, 21)), NOW, NOW + timedelta(milliseconds=100))
    cache.put(DATE, (20, 10), 0, page(*range(21, 31)), NOW, None)
    # Full: the page expired by `later` goes, though another was used less recently.
    cache.put(DATE, (30, 10), 0, page(*range(31, 41)), later, None)
    assert cache.bytes == 3 * one
    assert cache.get(DATE, (0, 10), later) is not None  # now the most recently used
    assert cache.get(DATE, (10, 10), later) is None
    # Full, nothing expired: the least recently used goes, (20, 10).
    cache.put(DATE, (40, 10), 0, page(*range(41, 51)), later, None)
    assert cache.get(DATE, (20, 10), later) is None
    for kept in ((0, 10), (30, 10), (40, 10)):
        assert cache.get(DATE, kept, later) is not None
    assert cache.bytes == 3 * one


def test_a_page_larger_than_the_whole_budget_is_not_kept_and_evicts_nothing() -> None:
    small = page(1)
    cache = SeatListCache(SECOND, max_bytes=small.ByteSize())
    cache.put(DATE, (0, 1), 0, small, NOW, None)
    cache.put(DATE, (0, 100), 0, page(*range(1, 101)), NOW, None)
    assert cache.get(DATE, (0, 100), NOW) is None
    assert cache.get(DATE, (0, 1), NOW) == small


def test_storing_a_page_again_replaces_it_and_counts_its_bytes_once() -> None:
    cache = SeatListCache(SECOND)
    cache.put(DATE, (0, 100), 0, page(1, 2, 3), NOW, None)
    cache.put(DATE, (0, 100), 0, page(2, 3), NOW, None)
    assert cache.get(DATE, (0, 100), NOW) == page(2, 3)
    assert cache.bytes == page(2, 3).ByteSize()
