"""The admission window and the observed admission rate: plain rules, no I/O.

A token is admitted when queue_number <= window_limit, where window_limit is
completed_count + capacity, or, while paused, the limit frozen when the pause
began.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class AdmissionState:
    version: int
    completed_count: int
    capacity: int
    paused: bool
    paused_limit: int | None
    updated_at: datetime

    @property
    def window_limit(self) -> int:
        if self.paused and self.paused_limit is not None:
            return self.paused_limit
        return self.completed_count + self.capacity

    def is_admitted(self, queue_number: int) -> bool:
        return queue_number <= self.window_limit

    def people_ahead(self, queue_number: int) -> int:
        return max(0, queue_number - self.window_limit)


RATE_WINDOW = timedelta(minutes=5)


class AdmissionRate:
    """Window advances per second, from the changes this process observed lately."""

    def __init__(self) -> None:
        self._samples: deque[tuple[datetime, int]] = deque()

    def observe(self, now: datetime, window_limit: int) -> None:
        self._samples.append((now, window_limit))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()

    def per_second(self, now: datetime) -> float | None:
        """None until the window has been seen to move forward."""
        if len(self._samples) < 2:
            return None
        (first_time, first_limit), (last_time, last_limit) = self._samples[0], self._samples[-1]
        # Measured up to now, so a window that stopped moving reads as slowing down.
        seconds = (max(now, last_time) - first_time).total_seconds()
        advanced = last_limit - first_limit
        if advanced <= 0 or seconds <= 0:
            return None
        return advanced / seconds

    def estimated_wait(self, now: datetime, people_ahead: int) -> timedelta | None:
        rate = self.per_second(now)
        if rate is None or people_ahead <= 0:
            return None
        return timedelta(seconds=people_ahead / rate)
