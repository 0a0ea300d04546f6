"""The admission window, the live line and the observed admission rate (server/queue/admission.py).

docs/queue.md: a token is admitted when queue_number <= window_limit;
people_ahead counts the live fans waiting ahead (numbers read with the line,
plus every number drawn since the read); estimated_wait is people_ahead over
admitted_total's growth in the last 5 minutes, as this process observed it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.queue.admission import RATE_WINDOW, AdmissionRate, LiveLine
from tests.unit.helpers import NOW, state

# -- the window ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue_number", "admitted"), [(1, True), (41, True), (42, True), (43, False), (10**12, False)]
)
def test_a_number_is_admitted_up_to_and_including_the_window_limit(
    queue_number: int, admitted: bool
) -> None:
    assert state(42).is_admitted(queue_number) is admitted


def test_an_empty_window_admits_nobody() -> None:
    assert not state(0).is_admitted(1)


def test_pausing_does_not_take_back_admission_already_given() -> None:
    # Pause stops the window where it is: those inside stay inside.
    assert state(42, paused=True).is_admitted(42)


# -- people ahead: the live line --------------------------------------------------


@st.composite
def lines(draw: st.DrawFn) -> tuple[LiveLine, int, int]:
    """A line read at some moment, the window now, and one fan's number."""
    read_upto = draw(st.integers(0, 200))
    numbers = sorted(draw(st.sets(st.integers(1, max(read_upto, 1)))) if read_upto else [])
    window_limit = draw(st.integers(0, 250))
    queue_number = draw(st.integers(1, 300))
    return LiveLine(numbers, read_upto), window_limit, queue_number


@given(lines())
def test_people_ahead_counts_live_numbers_and_numbers_drawn_since_the_read(
    case: tuple[LiveLine, int, int],
) -> None:
    line, window_limit, queue_number = case
    # The reference: who may be waiting ahead, counted one by one.
    live = set(line.numbers) | set(range(line.read_upto + 1, queue_number))
    expected = (
        0
        if queue_number <= window_limit
        else sum(1 for n in live if window_limit < n < queue_number)
    )
    assert line.people_ahead(queue_number, window_limit) == expected


def test_holes_and_lapsed_numbers_take_no_place_in_the_line() -> None:
    # Numbers 11..20 were drawn; only 12, 15 and 19 are still live and waiting.
    line = LiveLine([12, 15, 19], read_upto=20)
    assert line.people_ahead(19, window_limit=10) == 2
    assert line.people_ahead(16, window_limit=10) == 2
    assert line.people_ahead(12, window_limit=10) == 0


def test_a_window_that_moved_after_the_read_removes_the_fans_it_admitted() -> None:
    line = LiveLine([12, 15, 19], read_upto=20)
    assert line.people_ahead(19, window_limit=14) == 1


def test_fans_who_arrived_after_the_read_count_as_live_until_the_next_read() -> None:
    line = LiveLine([12, 15], read_upto=20)
    # 21..24 were drawn after the read: taken as live.
    assert line.people_ahead(25, window_limit=10) == 2 + 4


def test_an_admitted_fan_has_nobody_ahead_whatever_the_line_says() -> None:
    line = LiveLine([1, 2, 3, 4, 5], read_upto=5)
    assert line.people_ahead(5, window_limit=5) == 0


def test_before_the_first_read_every_drawn_number_above_the_window_counts() -> None:
    assert LiveLine().people_ahead(15, window_limit=10) == 4


# -- the admission rate -----------------------------------------------------------


def test_no_rate_until_two_observations() -> None:
    rate = AdmissionRate()
    assert rate.per_second(NOW) is None
    rate.observe(NOW, 10)
    assert rate.per_second(NOW + timedelta(seconds=5)) is None


def test_the_rate_is_the_growth_of_admitted_total_over_the_time_observed() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 100)
    rate.observe(NOW + timedelta(seconds=10), 150)
    assert rate.per_second(NOW + timedelta(seconds=10)) == pytest.approx(5.0)


def test_a_rate_is_measured_up_to_now_so_a_stopped_admission_reads_as_slowing() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 0)
    rate.observe(NOW + timedelta(seconds=10), 50)
    assert rate.per_second(NOW + timedelta(seconds=40)) == pytest.approx(50 / 40)


def test_a_now_before_the_last_observation_measures_up_to_the_observation() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 0)
    rate.observe(NOW + timedelta(seconds=10), 50)
    assert rate.per_second(NOW + timedelta(seconds=3)) == pytest.approx(5.0)


def test_no_growth_is_no_rate() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 70)
    rate.observe(NOW + timedelta(seconds=30), 70)
    assert rate.per_second(NOW + timedelta(seconds=30)) is None
    assert rate.estimated_wait(NOW + timedelta(seconds=30), 10) is None


def test_observations_older_than_the_rate_window_are_forgotten() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 0)
    rate.observe(NOW + timedelta(minutes=1), 100)
    rate.observe(NOW + timedelta(minutes=1) + RATE_WINDOW, 160)
    # The fast first minute (100 in 60 s) is out of the window: 60 over 5 minutes.
    later = NOW + timedelta(minutes=1) + RATE_WINDOW
    assert rate.per_second(later) == pytest.approx(60 / RATE_WINDOW.total_seconds())


def test_the_two_latest_observations_are_kept_however_old() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 0)
    rate.observe(NOW + timedelta(seconds=1), 10)
    assert rate.per_second(NOW + timedelta(hours=1)) == pytest.approx(10 / 3600)


def test_the_estimated_wait_is_people_ahead_over_the_rate() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 0)
    rate.observe(NOW + timedelta(seconds=10), 20)  # 2 fans a second
    assert rate.estimated_wait(NOW + timedelta(seconds=10), 30) == timedelta(seconds=15)


def test_nobody_ahead_has_no_estimated_wait() -> None:
    rate = AdmissionRate()
    rate.observe(NOW, 0)
    rate.observe(NOW + timedelta(seconds=10), 20)
    assert rate.estimated_wait(NOW + timedelta(seconds=10), 0) is None


@given(
    steps=st.lists(st.tuples(st.integers(1, 120), st.integers(0, 1000)), min_size=2, max_size=30),
    people_ahead=st.integers(1, 100_000),
)
def test_the_rate_is_never_negative_and_the_wait_inverts_it(
    steps: list[tuple[int, int]], people_ahead: int
) -> None:
    """admitted_total only grows: the rate is positive or unknown, and wait x rate = ahead."""
    rate = AdmissionRate()
    moment, total = NOW, 0
    for seconds, admitted in steps:
        moment += timedelta(seconds=seconds)
        total += admitted
        rate.observe(moment, total)
    per_second = rate.per_second(moment)
    wait = rate.estimated_wait(moment, people_ahead)
    if per_second is None:
        assert wait is None
    else:
        assert per_second > 0
        assert wait is not None
        # timedelta keeps microseconds: the wait is exact to half of one.
        assert wait.total_seconds() * per_second == pytest.approx(
            people_ahead, abs=per_second * 1e-6
        )
