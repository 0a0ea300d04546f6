"""The admission window, the live line and the observed admission rate: plain rules, no I/O.

A token is admitted when queue_number <= window_limit. The window's end is
stored in queue_state and moved only by the admission pass
(server/queue/admission_pass.py), which counts live tokens: numbers nobody
holds (rolled back, skipped by a crash) and tokens that lapsed while waiting
take no place. docs/queue.md states the invariants.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class AdmissionState:
    version: int
    window_limit: int  # the highest admitted queue number
    capacity: int
    paused: bool
    completed_count: int  # tokens that ended: paid or expired
    admitted_total: int  # waiting tokens the admission pass let in, ever
    updated_at: datetime

    def is_admitted(self, queue_number: int) -> bool:
        return queue_number <= self.window_limit


@dataclass(frozen=True)
class LiveLine:
    """The live waiting tokens' numbers, ascending, as read at one moment.

    people_ahead counts live fans only: of the numbers read, those above the
    window now and below the fan's; plus every number drawn since the read
    below the fan's (a fan who arrived after the read, taken as live until
    the next read says otherwise). So it is exact up to the read's age, at
    most a second: QueueRuntime re-reads the line every second.
    """

    numbers: Sequence[int] = ()
    read_upto: int = 0  # the last queue number drawn when the line was read

    def people_ahead(self, queue_number: int, window_limit: int) -> int:
        if queue_number <= window_limit:
            return 0
        known = bisect_left(self.numbers, queue_number) - bisect_right(self.numbers, window_limit)
        since_read = queue_number - 1 - max(self.read_upto, window_limit)
        return max(0, known) + max(0, since_read)


RATE_WINDOW = timedelta(minutes=5)


class AdmissionRate:
    """Fans admitted per second, from the changes this process observed lately."""

    def __init__(self) -> None:
        self._samples: deque[tuple[datetime, int]] = deque()

    def observe(self, now: datetime, admitted_total: int) -> None:
        self._samples.append((now, admitted_total))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()

    def per_second(self, now: datetime) -> float | None:
        """None until admissions have been seen."""
        if len(self._samples) < 2:
            return None
        (first_time, first_total), (last_time, last_total) = self._samples[0], self._samples[-1]
        # Measured up to now, so admission that stopped reads as slowing down.
        seconds = (max(now, last_time) - first_time).total_seconds()
        admitted = last_total - first_total
        if admitted <= 0 or seconds <= 0:
            return None
        return admitted / seconds

    def estimated_wait(self, now: datetime, people_ahead: int) -> timedelta | None:
        rate = self.per_second(now)
        if rate is None or people_ahead <= 0:
            return None
        return timedelta(seconds=people_ahead / rate)
