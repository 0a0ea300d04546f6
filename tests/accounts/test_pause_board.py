"""The pause board: every server process's open lane stops while any proven lane hashes.

The "workers" here are real processes (sleepers), stopped and continued with
real signals; their state is read from /proc. Two seats of one board stand for
two CONCERT_WORKERS processes; the hashers' test runs real hashing workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from server.accounts import hashing_worker
from server.accounts.passwords import PasswordHasher
from server.accounts.pause_board import PauseBoard
from tests.accounts.lanes import a_junk_hash_stops_while_a_proven_one_runs, process_state

pytestmark = pytest.mark.skipif(not hashing_worker.PAUSABLE, reason="workers pause on Linux only")


@pytest.fixture
def board() -> Iterator[PauseBoard]:
    board = PauseBoard(processes=2, workers_each=2)
    try:
        yield board
    finally:
        board.close()


@pytest.fixture
def sleepers() -> Iterator[list[int]]:
    """Four processes that do nothing for a minute: stand-ins for hashing workers."""
    processes = [subprocess.Popen(["sleep", "60"]) for _ in range(4)]
    pids = [process.pid for process in processes]
    try:
        waited = 0.0
        while _states(pids) != ["S"] * 4 and waited < 10:  # started, and asleep
            time.sleep(0.01)
            waited += 0.01
        yield pids
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _states(pids: list[int]) -> list[str]:
    """Each process's state letter: "T" while stopped, "S" once asleep again."""
    return [_settled(pid) for pid in pids]


def _settled(pid: int) -> str:
    # A continued sleeper runs for a moment before it sleeps again.
    state = process_state(pid)
    for _ in range(100):
        if state != "R":
            break
        time.sleep(0.01)
        state = process_state(pid)
    return state


def test_a_hash_in_one_process_stops_every_processes_open_lane_until_none_hashes(
    board: PauseBoard, sleepers: list[int]
) -> None:
    first, second = board.seat(0), board.seat(1)
    first.workers(sleepers[:2])
    second.workers(sleepers[2:])
    assert _states(sleepers) == ["S"] * 4

    first.hashing(True)
    assert _states(sleepers) == ["T"] * 4  # the other process's workers too
    second.hashing(True)
    first.hashing(False)
    assert _states(sleepers) == ["T"] * 4  # the second still hashes
    second.hashing(False)
    assert _states(sleepers) == ["S"] * 4
    assert not board.paused


def test_workers_started_while_paused_are_stopped_and_replaced_ones_continued(
    board: PauseBoard, sleepers: list[int]
) -> None:
    first, second = board.seat(0), board.seat(1)
    first.hashing(True)
    second.workers(sleepers[:1])  # a worker started on demand, meanwhile
    assert _states(sleepers[:1]) == ["T"]
    # Its pool broke and was replaced: the old worker must run to its end.
    second.workers(sleepers[1:3])
    assert _states(sleepers[:3]) == ["S", "T", "T"]
    first.hashing(False)
    assert _states(sleepers[:3]) == ["S", "S", "S"]


def test_a_process_that_leaves_continues_what_it_stopped_and_its_own(
    board: PauseBoard, sleepers: list[int]
) -> None:
    """release() is what the supervisor calls once a worker process exited,
    however it ended (a killed one could not), and what a stopping one calls."""
    first, second = board.seat(0), board.seat(1)
    first.workers(sleepers[:2])
    second.workers(sleepers[2:])
    second.hashing(True)
    first.hashing(True)
    first.leave()  # gone mid-hash: its own workers go on, the other's hash keeps the rest
    assert _states(sleepers) == ["S", "S", "T", "T"]
    board.release(1)
    assert _states(sleepers) == ["S"] * 4
    assert not board.paused


def test_a_process_killed_holding_the_boards_lock_does_not_lock_out_the_others(
    board: PauseBoard, sleepers: list[int]
) -> None:
    """The lock is a POSIX record lock: the kernel drops it with its holder."""
    seat = board.seat(0)
    seat.workers(sleepers[:1])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"fcntl.lockf({board.fileno()}, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        pass_fds=[board.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    done = threading.Event()

    def take_a_turn() -> None:
        seat.hashing(True)
        done.set()

    turn = threading.Thread(target=take_a_turn, daemon=True)
    turn.start()
    assert not done.wait(0.3)  # waits for the holder...
    holder.kill()
    holder.wait()
    assert done.wait(10)  # ...and no longer than it lives
    assert _states(sleepers[:1]) == ["T"]
    seat.hashing(False)


async def test_a_proven_hash_in_one_hasher_stops_the_other_hashers_open_lane_mid_hash() -> None:
    """Two hashers on one board, as two server processes' are: a junk hash
    running in the second's open lane stops where it is while the first's
    proven lane hashes, and finishes, right, after."""
    board = PauseBoard(processes=2, workers_each=1)
    fans = PasswordHasher(cost=10, workers=1, seat=board.seat(0))
    junk = PasswordHasher(cost=10, workers=1, seat=board.seat(1))
    try:
        await a_junk_hash_stops_while_a_proven_one_runs(fans, junk)
    finally:
        fans.close()
        junk.close()
        board.close()


async def test_without_shared_memory_the_hasher_runs_without_a_board(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sandbox that refuses memfd_create costs the pausing, not the server."""

    def refused(*args: object) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "memfd_create", refused)
    hasher = PasswordHasher(cost=10, workers=1)
    try:
        stored = await hasher.hash("a password")
        assert await hasher.proven.run(lambda: "proven lane") == "proven lane"
        assert await hasher.verify("a password", stored) is True
    finally:
        hasher.close()
    assert "will not be stopped while fans hash" in caplog.text
