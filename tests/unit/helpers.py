"""What the unit tests share: fixed moments, keys, and a pool that must stay unused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

from psycopg_pool import AsyncConnectionPool

from server.clock import FakeClock
from server.config import Settings
from server.queue.admission import AdmissionState
from server.queue.runtime import QueueRuntime

NOW = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
KEY_A = b"a" * 32
KEY_B = b"b" * 32


class DatabaseTouched(AssertionError):
    """Raised when code under a unit test reaches for the database (or the service context)."""


class NoDatabase:
    """Stands where a pool or a ServiceContext is required and fails on any use of it.

    Not a stand-in for PostgreSQL: it answers nothing. A test that means to
    stay in memory passes it, so an accidental query fails loudly; a test
    asserting that a path goes on to the database expects DatabaseTouched.
    """

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> NoReturn:
        raise DatabaseTouched(f"the code under test used {self._what}.{name}")


def no_database() -> AsyncConnectionPool:
    return cast(AsyncConnectionPool, NoDatabase("the pool"))


def no_context() -> Any:
    """For a ServiceContext: every attribute (pools, caches, clock) out of bounds."""
    return NoDatabase("the service context")


def no_booking() -> Any:
    """For a BookingRuntime: its seat lists and payment module out of bounds."""
    return NoDatabase("the booking runtime")


def state(
    window_limit: int,
    *,
    version: int = 1,
    capacity: int = 100,
    paused: bool = False,
    completed_count: int = 0,
    admitted_total: int = 0,
) -> AdmissionState:
    return AdmissionState(
        version=version,
        window_limit=window_limit,
        capacity=capacity,
        paused=paused,
        completed_count=completed_count,
        admitted_total=admitted_total,
        updated_at=NOW,
    )


def runtime(clock: FakeClock, settings: Settings | None = None, **kwargs: Any) -> QueueRuntime:
    """A QueueRuntime that never started (no LISTEN, no tasks); `kwargs` form its first state."""
    queue = QueueRuntime(settings or Settings(), no_database(), clock)
    if kwargs:
        queue.apply(state(**kwargs))
    return queue


def new_id() -> uuid.UUID:
    return uuid.uuid4()
