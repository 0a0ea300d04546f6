"""WatcherWakeups and watch_interval: when waiting watch streams wake and send.

Pure in-memory scheduling (no database): the streams over real gRPC are in
test_watch.py. Times are loop times passed in by the test, so nothing sleeps.
"""

from __future__ import annotations

import pytest

from server.queue.presence import watch_interval
from server.queue.runtime import WatcherWakeups


@pytest.mark.parametrize(
    ("people_ahead", "seconds"),
    [(0, 1.0), (999, 1.0), (1000, 2.0), (3500, 4.0), (4999, 5.0), (250_000, 5.0)],
)
def test_the_send_interval_grows_with_the_distance_from_the_front(
    people_ahead: int, seconds: float
) -> None:
    assert watch_interval(people_ahead) == seconds


async def test_a_watcher_waiting_for_a_change_wakes_only_at_a_pulse_after_one() -> None:
    wakeups = WatcherWakeups()
    waiter = wakeups.wait(50)
    wakeups.pulse(1.0, changed=False)
    assert not waiter.done()
    wakeups.pulse(2.0, changed=True)
    assert waiter.done()
    assert wakeups.pulsed_at == 2.0


async def test_a_watcher_waiting_out_its_interval_wakes_once_at_its_time() -> None:
    wakeups = WatcherWakeups()
    waiter = wakeups.wait(50, not_before=10.0)
    assert not wakeups.due(9.9)
    wakeups.pulse(9.9, changed=True)  # changes before its time do not wake it
    assert not waiter.done()
    assert wakeups.due(10.0)
    wakeups.pulse(10.0, changed=False)  # its time wakes it, change or not
    assert waiter.done()
    assert not wakeups.waiting


async def test_admission_wakes_at_once_whatever_the_watcher_waits_for() -> None:
    wakeups = WatcherWakeups()
    for_change = wakeups.wait(10)
    for_time = wakeups.wait(20, not_before=100.0)
    behind = wakeups.wait(30, not_before=100.0)
    wakeups.admit(25)
    assert for_change.done() and for_time.done() and not behind.done()
    wakeups.pulse()  # the runtime stopping: everyone
    assert behind.done()


async def test_far_back_watchers_waiting_again_and_again_do_not_grow_the_number_heap() -> None:
    wakeups = WatcherWakeups()
    numbers = range(1_000, 3_000)
    now = 0.0
    for _ in range(50):  # fifty rounds: every watcher waits out its time, wakes, waits again
        for number in numbers:
            wakeups.wait(number, not_before=now + 1.0)
        now += 1.0
        wakeups.pulse(now, changed=True)
    # 100,000 waits were made; only a bounded slack of stale entries may stay.
    assert len(wakeups._by_number) <= 64
