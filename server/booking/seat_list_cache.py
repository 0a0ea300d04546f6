"""ListAvailableSeats pages, kept in memory for a moment.

On on-sale day every admitted fan lists the same date's seats, again and
again, while a few hundred holds a second change them. Each list was a query
and 100 Seat messages built in Python; here a page is built at most once per
CONCERT_SEAT_LIST_MAX_AGE_MS (1 s by default) per process, and served from
memory in between.

What a cached page may get wrong, and for how long:
- a seat held or sold by ANOTHER process can still be listed as free for up
  to the max age (ReserveSeat then answers ALREADY_EXISTS, as it would for a
  fan who lost the race a moment later). This process's own holds and
  cancellations drop the date's pages at once.
- a hold that runs out frees its seat exactly on time: a page is never kept
  past the earliest hold expiry on its date (the query returns it).
The list could already lag the primary by a replica's replay delay
(CONCERT_DATABASE_READ_URL); the max age is of the same kind and size.

A page read before an invalidation is never stored after it (a generation
per date), so a process never re-caches what it has just changed.

Memory is bounded in bytes, not pages (a page's key is the client's choice:
any start seat, any page size up to 1,000): at most MAX_BYTES of serialized
pages. Past it, expired pages go first, then the least recently used.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from concert.v1 import concert_pb2

# Serialized bytes of the pages kept, over every date. A page of 100 seats is
# about 6 KB serialized (and a few times that as Python objects): hundreds of
# pages, far more than fans browse, and a few MiB of the 512 MiB a pod has.
MAX_BYTES = 4 * 1024 * 1024

PageKey = tuple[int, int]  # after seat, page size


@dataclass(frozen=True)
class _Page:
    response: concert_pb2.ListAvailableSeatsResponse
    valid_until: datetime
    size: int


class SeatListCache:
    def __init__(self, max_age: timedelta, max_bytes: int = MAX_BYTES) -> None:
        self.max_age = max_age
        self.max_bytes = max_bytes
        # (date, page key) -> page, least recently used first.
        self._pages: OrderedDict[tuple[uuid.UUID, PageKey], _Page] = OrderedDict()
        self.bytes = 0
        self._generations: dict[uuid.UUID, int] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_age > timedelta(0)

    def get(
        self, date_id: uuid.UUID, key: PageKey, now: datetime
    ) -> concert_pb2.ListAvailableSeatsResponse | None:
        page = self._pages.get((date_id, key))
        if page is None or page.valid_until <= now:
            if page is not None:
                self._drop((date_id, key))  # expired: its bytes are free at once
            self.misses += 1
            return None
        self._pages.move_to_end((date_id, key))
        self.hits += 1
        return page.response

    def generation(self, date_id: uuid.UUID) -> int:
        """Read before the page's query; pass to put."""
        return self._generations.get(date_id, 0)

    def put(
        self,
        date_id: uuid.UUID,
        key: PageKey,
        generation: int,
        response: concert_pb2.ListAvailableSeatsResponse,
        built_at: datetime,
        next_hold_expiry: datetime | None,
    ) -> None:
        if not self.enabled or self._generations.get(date_id, 0) != generation:
            return  # the date changed while the page was read
        valid_until = built_at + self.max_age
        if next_hold_expiry is not None:
            valid_until = min(valid_until, next_hold_expiry)
        size = response.ByteSize()
        if size > self.max_bytes:
            return
        self._drop((date_id, key))
        self._make_room(size, built_at)
        self._pages[(date_id, key)] = _Page(response, valid_until, size)
        self.bytes += size

    def invalidate(self, date_id: uuid.UUID) -> None:
        """This process changed the date's seats: drop its pages."""
        self._generations[date_id] = self._generations.get(date_id, 0) + 1
        for entry in [entry for entry in self._pages if entry[0] == date_id]:
            self._drop(entry)

    def _make_room(self, size: int, now: datetime) -> None:
        if self.bytes + size <= self.max_bytes:
            return
        for entry in [e for e, page in self._pages.items() if page.valid_until <= now]:
            self._drop(entry)
        while self._pages and self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, entry: tuple[uuid.UUID, PageKey]) -> None:
        page = self._pages.pop(entry, None)
        if page is not None:
            self.bytes -= page.size
