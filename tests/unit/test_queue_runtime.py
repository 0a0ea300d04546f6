"""QueueRuntime's in-memory rules (server/queue/runtime.py), on a runtime that never started.

No LISTEN connection and no tasks: states are handed to apply() as a NOTIFY
or a commit would, and the pool it was given fails on any use. Covers: newest
version wins, completions are remembered whatever the version, which changes
may free places (the admission trigger), the rate fed by applied states, the
per-token stream cap and the watched tokens' expiries. Also the NOTIFY payload
(server/queue/store.py encode_change/decode_change), which feeds apply().
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concert.v1.error_reason_pb2 import ErrorReason
from server.clock import FakeClock
from server.errors import Unavailable
from server.queue import store
from server.queue.admission import AdmissionState
from server.queue.runtime import QueueRuntime
from tests.unit.helpers import NOW, new_id, runtime, state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


# -- state: newest version wins -----------------------------------------------------


def test_until_a_state_is_known_the_queue_is_unavailable_with_a_retry(clock: FakeClock) -> None:
    queue = runtime(clock)
    with pytest.raises(Unavailable) as caught:
        _ = queue.state
    assert caught.value.reason == ErrorReason.ERROR_REASON_QUEUE_STARTING
    assert caught.value.retry_after_seconds == 1.0


def test_a_newer_version_is_adopted_an_older_or_equal_one_is_not(clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10, version=5)
    assert not queue.apply(state(99, version=4))
    assert not queue.apply(state(99, version=5))
    assert queue.state.window_limit == 10
    assert queue.apply(state(20, version=6))
    assert queue.state.window_limit == 20
    assert queue.changes_applied == 2


def test_completions_are_remembered_even_from_a_stale_state(clock: FakeClock) -> None:
    """A payment's NOTIFY may arrive after a newer re-read: its token is still refused."""
    queue = runtime(clock, window_limit=10, version=5)
    paid, lapsed = new_id(), new_id()
    adopted = queue.apply(
        state(10, version=3),
        [(paid, NOW + timedelta(minutes=5)), (lapsed, NOW)],
    )
    assert not adopted
    assert queue.is_completed(paid)
    assert not queue.is_completed(lapsed)  # already past its expiry: the gate refuses it anyway


def test_a_payment_committed_here_is_refused_before_its_echo(clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10)
    paid, old = new_id(), new_id()
    queue.completed_here(paid, NOW + timedelta(seconds=1))
    queue.completed_here(old, NOW - timedelta(seconds=1))
    assert queue.is_completed(paid)
    assert not queue.is_completed(old)


def test_the_rate_is_fed_by_each_adopted_state(clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10, admitted_total=100, version=1)
    clock.advance(10)
    queue.apply(state(40, admitted_total=130, version=2))
    assert queue.rate.per_second(clock.now()) == pytest.approx(3.0)
    clock.advance(10)
    queue.apply(state(90, admitted_total=999, version=2))  # stale: not an observation
    assert queue.rate.per_second(clock.now()) == pytest.approx(30 / 20)


def test_people_ahead_before_the_first_line_read_counts_every_number_above_the_window(
    clock: FakeClock,
) -> None:
    queue = runtime(clock, window_limit=10)
    assert queue.people_ahead(15) == 4
    assert queue.people_ahead(10) == 0


async def test_an_adopted_state_wakes_the_watchers_it_admits_at_once(clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10, version=1)
    reached = queue.wakeups.wait(12)
    beyond = queue.wakeups.wait(13)
    queue.apply(state(12, version=1))  # stale: admits nobody
    assert not reached.done()
    queue.apply(state(12, version=2))
    assert reached.done()
    assert not beyond.done()


# -- which changes may free places (the admission trigger) --------------------------


def _freed(queue: QueueRuntime) -> list[int]:
    calls: list[int] = []
    queue.on_places_freed = lambda: calls.append(1)
    return calls


def test_the_first_state_is_not_a_change(clock: FakeClock) -> None:
    queue = runtime(clock)
    calls = _freed(queue)
    queue.apply(state(10, completed_count=5, version=1))
    assert calls == []


@pytest.mark.parametrize(
    ("change", "frees"),
    [
        ({"completed_count": 6}, True),  # a fan paid or lapsed
        ({"capacity": 101}, True),
        ({"capacity": 99}, False),
        ({"paused": True}, False),
        ({"window_limit": 50}, False),  # a pass moved the window: nothing left
        ({"admitted_total": 50}, False),
    ],
)
def test_a_change_may_free_places_when_fans_left_or_capacity_rose(
    clock: FakeClock, change: dict[str, Any], frees: bool
) -> None:
    queue = runtime(clock, window_limit=10, completed_count=5, capacity=100, version=1)
    calls = _freed(queue)
    queue.apply(dataclasses.replace(queue.state, version=2, **change))
    assert calls == ([1] if frees else [])


def test_resuming_admission_may_free_places(clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10, paused=True, version=1)
    calls = _freed(queue)
    queue.apply(state(10, paused=True, version=2))
    assert calls == []
    queue.apply(state(10, paused=False, version=3))
    assert calls == [1]


def test_a_stale_state_frees_nothing(clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10, completed_count=5, version=4)
    calls = _freed(queue)
    queue.apply(state(10, completed_count=9, version=3))
    assert calls == []


# -- streams and watched tokens ----------------------------------------------------


def test_a_token_has_at_most_limit_open_streams_and_closing_frees_a_place(
    clock: FakeClock,
) -> None:
    queue = runtime(clock)
    token, other = new_id(), new_id()
    assert queue.open_stream(token, 2)
    assert queue.open_stream(token, 2)
    assert not queue.open_stream(token, 2)
    assert queue.open_stream(other, 2)  # per token, not per process
    assert queue.stream_count(token) == 2
    queue.close_stream(token)
    assert queue.stream_count(token) == 1
    assert queue.open_stream(token, 2)


def test_closing_a_stream_that_was_never_opened_takes_no_count_below_zero(
    clock: FakeClock,
) -> None:
    queue = runtime(clock)
    token = new_id()
    queue.close_stream(token)
    assert queue.stream_count(token) == 0
    assert queue.open_stream(token, 1)
    assert not queue.open_stream(token, 1)


def test_a_watched_token_keeps_the_latest_expiry_until_its_last_stream_ends(
    clock: FakeClock,
) -> None:
    queue = runtime(clock)
    token = new_id()
    later, earlier = NOW + timedelta(minutes=10), NOW + timedelta(minutes=5)
    queue.watch(token, later)
    queue.watch(token, earlier)  # a second stream opened with an older row
    assert queue.watched_expiry(token) == later
    assert queue.watcher_count == 2
    queue.unwatch(token)
    assert queue.watched_expiry(token) == later
    queue.unwatch(token)
    assert queue.watched_expiry(token) is None
    assert queue.watcher_count == 0


# -- the NOTIFY payload that feeds apply() ------------------------------------------

_moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_counts = st.integers(0, 2**62)


@given(
    admission=st.builds(
        AdmissionState,
        version=_counts,
        window_limit=_counts,
        capacity=st.integers(0, 1_000_000),
        paused=st.booleans(),
        completed_count=_counts,
        admitted_total=_counts,
        updated_at=_moments,
    ),
    tokens=st.lists(st.tuples(st.uuids(), _moments), max_size=5),
)
def test_a_change_decodes_to_the_state_and_completions_it_encodes(
    admission: AdmissionState, tokens: list[tuple[uuid.UUID, datetime]]
) -> None:
    assert store.decode_change(store.encode_change(admission, tokens)) == (admission, tokens)
