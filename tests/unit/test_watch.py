"""WatchQueueStatus pacing: the send interval and when waiting streams wake.

- watch_interval (server/queue/presence.py): 1 s near the front, one second
  more per 1,000 places ahead, at most 5 s;
- WatcherWakeups (server/queue/runtime.py): a watcher waiting for a change
  wakes at the next pulse after one; a watcher waiting out its interval wakes
  at the first pulse at or after its time; a change that admits its number
  wakes it at once; stopping wakes everyone.

Loop times are numbers the test passes in: nothing sleeps. tests/queue/
test_watch_wakeups.py has the hand-picked cases; these are the properties.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.queue.presence import (
    WATCH_MAX_INTERVAL_SECONDS,
    WATCH_MIN_INTERVAL_SECONDS,
    WATCH_PLACES_PER_SECOND,
    watch_interval,
)
from server.queue.runtime import WatcherWakeups

# -- watch_interval -----------------------------------------------------------------

_ahead = st.integers(0, 10**9)


def test_the_interval_constants_are_those_docs_queue_md_states() -> None:
    assert (WATCH_MIN_INTERVAL_SECONDS, WATCH_MAX_INTERVAL_SECONDS) == (1.0, 5.0)
    assert WATCH_PLACES_PER_SECOND == 1000


@pytest.mark.parametrize(
    ("people_ahead", "seconds"),
    [(0, 1.0), (1, 1.0), (1999, 2.0), (2000, 3.0), (3999, 4.0), (4000, 5.0), (10**9, 5.0)],
)
def test_the_interval_at_its_steps(people_ahead: int, seconds: float) -> None:
    assert watch_interval(people_ahead) == seconds


@given(_ahead)
def test_the_interval_stays_between_one_and_five_seconds(people_ahead: int) -> None:
    assert 1.0 <= watch_interval(people_ahead) <= 5.0


@given(_ahead, _ahead)
def test_a_fan_further_back_never_hears_more_often(a: int, b: int) -> None:
    nearer, further = sorted((a, b))
    assert watch_interval(nearer) <= watch_interval(further)


@given(st.integers(0, 3_999))
def test_each_thousand_places_ahead_adds_one_second_below_the_cap(people_ahead: int) -> None:
    assert watch_interval(people_ahead + 1000) == watch_interval(people_ahead) + 1.0
    # ...and within one thousand, nothing changes.
    start = people_ahead - people_ahead % 1000
    assert watch_interval(start) == watch_interval(start + 999) == watch_interval(people_ahead)


# -- WatcherWakeups -----------------------------------------------------------------

# One watcher: its queue number, and the loop time it waits out (None: waits for a change).
_watchers = st.lists(
    st.tuples(st.integers(1, 500), st.none() | st.floats(0.0, 100.0)), min_size=1, max_size=40
)


def _woken(futures: list[asyncio.Future[None]]) -> list[bool]:
    return [future.done() for future in futures]


@given(_watchers, st.integers(0, 500))
async def test_admission_wakes_exactly_the_watchers_it_reaches(
    watchers: list[tuple[int, float | None]], window_limit: int
) -> None:
    wakeups = WatcherWakeups()
    futures = [wakeups.wait(number, not_before=at) for number, at in watchers]
    wakeups.admit(window_limit)
    assert _woken(futures) == [number <= window_limit for number, _ in watchers]


@given(_watchers, st.floats(0.0, 100.0), st.booleans())
async def test_a_pulse_wakes_the_watchers_whose_time_came_and_if_changed_those_awaiting_a_change(
    watchers: list[tuple[int, float | None]], now: float, changed: bool
) -> None:
    wakeups = WatcherWakeups()
    futures = [wakeups.wait(number, not_before=at) for number, at in watchers]
    wakeups.pulse(now, changed=changed)
    assert _woken(futures) == [changed if at is None else at <= now for _, at in watchers]
    assert wakeups.pulsed_at == now
    assert wakeups.waiting == (not all(future.done() for future in futures))


@given(_watchers, st.floats(0.0, 100.0))
async def test_some_watcher_is_due_exactly_when_one_waits_out_a_time_that_came(
    watchers: list[tuple[int, float | None]], now: float
) -> None:
    wakeups = WatcherWakeups()
    for number, at in watchers:
        wakeups.wait(number, not_before=at)
    assert wakeups.due(now) == any(at is not None and at <= now for _, at in watchers)


@given(_watchers, st.integers(0, 500), st.floats(0.0, 100.0))
async def test_stopping_wakes_every_watcher_after_any_admission_or_pulse(
    watchers: list[tuple[int, float | None]], window_limit: int, now: float
) -> None:
    wakeups = WatcherWakeups()
    futures = [wakeups.wait(number, not_before=at) for number, at in watchers]
    wakeups.admit(window_limit)  # some are woken twice from here on: never an error
    wakeups.pulse(now, changed=False)
    wakeups.pulse()
    assert all(_woken(futures))
    assert not wakeups.waiting
    assert wakeups.pulsed_at == now  # stopping is not a pulse in loop time


async def test_a_watcher_woken_by_admission_does_not_keep_the_others_waiting() -> None:
    wakeups = WatcherWakeups()
    admitted = wakeups.wait(5)
    behind = wakeups.wait(50)
    wakeups.admit(5)
    assert admitted.done() and not behind.done()
    wakeups.pulse(1.0, changed=True)
    assert behind.done()


async def test_a_watcher_waiting_again_after_a_pulse_waits_for_the_next_change() -> None:
    wakeups = WatcherWakeups()
    first = wakeups.wait(50)
    wakeups.pulse(1.0, changed=True)
    again = wakeups.wait(50)
    wakeups.pulse(2.0, changed=False)
    assert first.done() and not again.done()
    wakeups.pulse(3.0, changed=True)
    assert again.done()
