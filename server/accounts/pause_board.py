"""One machine's open lanes, stopped together while any proven lane hashes.

server/accounts/passwords.py stops the open lane's worker processes (SIGSTOP)
while the proven lane hashes: memory-hard hashes slow each other down through
the shared caches and memory bus, so a fan's hash gets its lone speed only if
no junk hash runs beside it. With CONCERT_WORKERS=N there are N server
processes on the machine, each with both lanes; a fan's hash in one must stop
the open lanes of all of them, or the others' junk hashing keeps the cores.

The board is shared memory that the supervisor maps before it forks
(server/workers.py), one slot per server process:

    [paused] then, per slot: [hashing, worker pid, worker pid, ...]

- `hashing`: 1 while that process's proven lane hashes; its own writer only.
- the worker pids: that process's open-lane workers, published after every
  hash it hands them (they start on demand, and are replaced when one dies).
- `paused`: 1 while any slot is hashing, and then every listed pid has been
  sent SIGSTOP; 0, and none is stopped by the board.

Every change happens under a POSIX record lock on the board's file (fcntl),
which the kernel releases when its holder dies, so a killed process never
leaves the others locked out; a slot whose process is gone is cleared by the
supervisor (release), which continues whatever that slot kept stopped. The
lock is held for a few kill() calls, microseconds, by one thread per process
(the event loop's).

A single server process has a board of one slot, of its own.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from server.accounts import hashing_worker

log = logging.getLogger(__name__)

_INT_BYTES = 4
_PAUSED = 0  # the header's one field
_HEADER = 1


def open_board(processes: int, workers_each: int) -> PauseBoard | None:
    """A board, or None where workers cannot be stopped safely (not Linux:
    hashing_worker.PAUSABLE) or shared memory is refused (a sandbox without
    memfd_create): the open lane then only starts no new hash while a fan
    hashes, and keeps the ones under way."""
    if not hashing_worker.PAUSABLE:
        return None
    try:
        return PauseBoard(processes, workers_each)
    except OSError as exc:
        log.warning("open-lane workers will not be stopped while fans hash: %s", exc)
        return None


class PauseBoard:
    """Slots for `processes` server processes of up to `workers_each` open-lane workers."""

    def __init__(self, processes: int, workers_each: int) -> None:
        if processes < 1 or workers_each < 1:
            raise ValueError("a board needs at least one process and one worker each")
        self.processes = processes
        self._slot_size = 1 + workers_each
        size = _INT_BYTES * (_HEADER + processes * self._slot_size)
        # A memfd: memory with a file's locks, inherited by the forked
        # processes (they share the mapping), gone with the last of them.
        self._fd = os.memfd_create("concert-pause-board", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._ints = memoryview(self._map).cast("i")

    def seat(self, index: int) -> PauseSeat:
        """Process `index`'s place on the board (its own slot)."""
        if not 0 <= index < self.processes:
            raise IndexError(f"slot {index} of {self.processes}")
        return PauseSeat(self, index)

    def fileno(self) -> int:
        """The board's file: its memory, and its lock."""
        return self._fd

    @property
    def paused(self) -> bool:
        return bool(self._ints[_PAUSED])

    def set_hashing(self, index: int, hashing: bool) -> None:
        if self.closed:  # a hash that ends after its server stopped
            return
        with self._locked():
            self._ints[self._start(index)] = int(hashing)
            self._settle()

    def publish(self, index: int, workers: Iterable[int]) -> None:
        """Record process `index`'s open-lane workers; while paused, stop the new
        ones and continue those it no longer has (a replaced pool's, which must
        run to their end)."""
        if self.closed:
            return
        start = self._start(index)
        capacity = self._slot_size - 1
        pids = list(workers)[:capacity]
        with self._locked():
            before = set(self._slot_pids(start))
            for offset in range(capacity):
                self._ints[start + 1 + offset] = pids[offset] if offset < len(pids) else 0
            if self._ints[_PAUSED]:
                _signal(before.difference(pids), signal.SIGCONT)
                _signal(set(pids).difference(before), signal.SIGSTOP)

    def release(self, index: int) -> None:
        """Process `index` is leaving or gone: continue its workers if stopped,
        clear its slot, and continue everything if nothing else hashes."""
        if self.closed:
            return
        start = self._start(index)
        with self._locked():
            if self._ints[_PAUSED]:
                _signal(self._slot_pids(start), signal.SIGCONT)
            for offset in range(self._slot_size):
                self._ints[start + offset] = 0
            self._settle()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Unmap the board, in the process that made it (the others' copies go with them)."""
        if self.closed:
            return
        self._ints.release()
        self._map.close()
        os.close(self._fd)
        self._fd = -1

    def _start(self, index: int) -> int:
        return _HEADER + index * self._slot_size

    def _slot_pids(self, start: int) -> list[int]:
        return [pid for pid in self._ints[start + 1 : start + self._slot_size] if pid]

    def _settle(self) -> None:
        """Stop or continue every listed worker so that `paused` says whether any slot hashes."""
        starts = [self._start(index) for index in range(self.processes)]
        hashing = any(self._ints[start] for start in starts)
        if hashing == bool(self._ints[_PAUSED]):
            return
        every = [pid for start in starts for pid in self._slot_pids(start)]
        _signal(every, signal.SIGSTOP if hashing else signal.SIGCONT)
        self._ints[_PAUSED] = int(hashing)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)


class PauseSeat:
    """One server process's slot: its proven lane says when it hashes, its open
    lane publishes its workers (cheaply: only a change takes the lock)."""

    def __init__(self, board: PauseBoard, index: int) -> None:
        self.board = board
        self.index = index
        self._published: tuple[int, ...] = ()

    def hashing(self, hashing: bool) -> None:
        self.board.set_hashing(self.index, hashing)

    def workers(self, pids: Iterable[int]) -> None:
        current = tuple(sorted(pids))
        if current != self._published:
            self.board.publish(self.index, current)
            self._published = current

    def leave(self) -> None:
        self.board.release(self.index)
        self._published = ()


def _signal(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        # Gone already, or (pid reused) someone else's: nothing of ours to stop.
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
