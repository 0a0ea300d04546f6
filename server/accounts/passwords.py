"""Password hashing off the event loop, in two lanes with bounded lines.

The hashes themselves are server/accounts/kdf.py (scrypt). hashlib.scrypt
releases the GIL, so the proven lane's threads use every core while the event
loop keeps serving other calls; the open lane hashes in worker processes of
its own, at a low priority (server/accounts/hashing_worker.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TypeVar

from server.accounts import hashing_worker
from server.accounts.kdf import hash_password_blocking, verify_password_blocking
from server.accounts.pacing import RETRY_AFTER_SECONDS
from server.accounts.pause_board import PauseBoard, PauseSeat, open_board
from server.cpu import available_cpus
from server.errors import ErrorReason, ResourceExhausted

_T = TypeVar("_T")


# Hashes that may wait for a worker, per worker: beyond them a call is refused
# at once (RESOURCE_EXHAUSTED) instead of queueing behind a storm. With two
# waiting per worker, an accepted call waits at most about two hashes' time.
WAITING_PER_WORKER = 2
# How much the open lane's worker processes yield the CPU (a nice value, also
# given to their autogroup): when the cores are short, the event loop (every
# other call), the proven lane, the database and the proxies come first, and
# an anonymous storm's hashes take what they leave.
OPEN_LANE_NICENESS = 10
# The open lane's workers are forked from a small server process that has
# imported only the hashing (multiprocessing's forkserver): a fresh worker
# starts in milliseconds, without a copy of the server's threads or memory.
_WORKER_MODULES = ["server.accounts.kdf", "server.accounts.hashing_worker"]


class HashingBusy(ResourceExhausted):
    """Every worker is hashing and the waiting line is full: refused at once."""

    def __init__(self) -> None:
        super().__init__(
            ErrorReason.ERROR_REASON_PASSWORD_HASHING_BUSY,
            "too many sign-ins at once; retry shortly",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )


def hashing_threads(name: str, workers: int) -> Callable[[], Executor]:
    return lambda: ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


def hashing_processes(workers: int, niceness: int) -> Callable[[], Executor]:
    """Worker processes that lead sessions of their own, niced, and end with
    this process (see hashing_worker)."""

    def start() -> Executor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_WORKER_MODULES)
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=hashing_worker.start,
            initargs=(os.getpid(), niceness),
        )

    return start


class HashingLane:
    """Workers of their own and a bounded line in front of them (FIFO, the executor's).

    A lane that `yields_to` another starts no hash while that one is hashing.
    Its hashes already running stop too: `on_busy` tells the machine's pause
    board (server/accounts/pause_board.py) when this lane starts and ends
    hashing, and `on_workers` tells it the worker processes to stop (SIGSTOP)
    meanwhile and continue (SIGCONT) after, wherever they were: memory-hard
    hashes slow each other down through the shared caches and memory bus, not
    only through the cores, so a nice value alone does not give the other lane
    its lone speed. A hash takes tens of milliseconds, so no worker stays
    stopped longer than the proven lanes keep hashing.
    """

    def __init__(
        self,
        workers: Callable[[], Executor],
        places: int,
        yields_to: HashingLane | None = None,
        *,
        on_busy: Callable[[bool], None] | None = None,
        on_workers: Callable[[Iterable[int]], None] | None = None,
    ) -> None:
        self.places = places  # running plus waiting
        self.in_flight = 0
        self._hashing = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._yields_to = yields_to
        self._on_busy = on_busy
        self._on_workers = on_workers
        self._start_workers = workers
        self._executor = workers()

    def has_room(self) -> bool:
        return self.in_flight < self.places

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        if self._yields_to is not None:
            await self._yields_to._idle.wait()
        self._hashing += 1
        if self._hashing == 1:
            self._idle.clear()
            if self._on_busy is not None:
                self._on_busy(True)
        executor = self._executor
        try:
            try:
                return await self._hand_over(executor, function, *args)
            except BrokenProcessPool:
                # A worker process died (killed, out of memory) and took the pool
                # with it: the first call to notice starts new workers, and every
                # call it failed runs once more there (a hash has no side effects).
                if self._executor is executor:
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._start_workers()
            try:
                return await self._hand_over(self._executor, function, *args)
            except BrokenProcessPool:  # the new workers died too: the caller retries later
                raise HashingBusy from None
        finally:
            self._hashing -= 1
            if not self._hashing:
                if self._on_busy is not None:
                    self._on_busy(False)
                self._idle.set()

    def _hand_over(
        self, executor: Executor, function: Callable[..., _T], *args: object
    ) -> asyncio.Future[_T]:
        future = asyncio.get_running_loop().run_in_executor(executor, function, *args)
        if self._on_workers is not None:
            # Submitting may have started a worker, or replaced a dead one: the
            # executor's own table of its processes is the one up-to-date list.
            self._on_workers(getattr(executor, "_processes", None) or ())
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PasswordHasher:
    """Hashes and verifies passwords off the event loop, in two lanes, each with
    workers of its own behind a bounded line (anonymous callers cannot queue
    unbounded work):

    - the open lane, for anyone: as many worker processes as the CPUs this
      process may use, niced (and their autogroups) so that a storm of
      anonymous hashes yields the CPU to everything else on the host, and
      stopped while the proven lane hashes. Its hashes' memory (16 MiB
      each at the production cost) is theirs, not the server's;
    - the proven lane, for callers who proved a past success (a session
      credential of the account from an earlier sign-in): as many threads,
      at the process's priority. A junk flood fills the open lane, never this
      one, so a fan who signed in before never waits behind it. When the proven
      lane is full, a proven caller takes a place in the open lane.
    """

    def __init__(
        self,
        cost: int,
        workers: int | None = None,
        waiting: int | None = None,
        *,
        seat: PauseSeat | None = None,
    ) -> None:
        """`seat`: this process's slot on the machine's pause board, when several
        server processes share it (CONCERT_WORKERS); by default a board of its own."""
        self._cost = cost
        self.workers = workers or available_cpus()
        line = WAITING_PER_WORKER * self.workers if waiting is None else waiting
        self._own_board: PauseBoard | None = None
        if seat is None:
            self._own_board = open_board(processes=1, workers_each=self.workers)
            seat = self._own_board.seat(0) if self._own_board is not None else None
        self._seat = seat
        self._closed = False
        self.proven = HashingLane(
            hashing_threads("scrypt-proven", self.workers),
            self.workers * (1 + WAITING_PER_WORKER),
            on_busy=seat.hashing if seat is not None else None,
        )
        self.open = HashingLane(
            hashing_processes(self.workers, OPEN_LANE_NICENESS),
            self.workers + line,
            yields_to=self.proven,
            on_workers=seat.workers if seat is not None else None,
        )
        # Verified when the email is unknown, so that answer costs a hash too:
        # an attacker cannot tell unknown emails from wrong passwords by timing.
        self._decoy: str | None = None

    @contextmanager
    def place(self, *, proven: bool = False) -> Iterator[HashingLane]:
        """A place in a lane's line, held for the block; HashingBusy at once if full.

        A caller that must do other bookkeeping before it hashes (the sign-in
        budgets) takes the place first, so nothing is counted for a call that
        is then refused, and verify_in_place inside the block hashes in it.
        """
        lane = self.proven if proven and self.proven.has_room() else self.open
        if not lane.has_room():
            raise HashingBusy
        lane.in_flight += 1
        try:
            yield lane
        finally:
            lane.in_flight -= 1

    async def hash(self, password: str) -> str:
        with self.place() as lane:
            return await lane.run(hash_password_blocking, password, self._cost)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if password matches stored; with stored None, costs a hash and says False."""
        with self.place() as lane:
            return await self.verify_in_place(lane, password, stored)

    async def verify_in_place(self, lane: HashingLane, password: str, stored: str | None) -> bool:
        """verify, in the lane of a place() the caller holds."""
        if stored is None:
            if self._decoy is None:
                self._decoy = await lane.run(
                    hash_password_blocking, secrets.token_urlsafe(16), self._cost
                )
            await lane.run(verify_password_blocking, password, self._decoy)
            return False
        return await lane.run(verify_password_blocking, password, stored)

    def close(self) -> None:
        """Stop the workers; once (the server's stop may run twice)."""
        if self._closed:
            return
        self._closed = True
        # Continued first, if stopped: a stopped worker cannot end.
        if self._seat is not None:
            self._seat.leave()
        self.open.close()
        self.proven.close()
        if self._own_board is not None:
            self._own_board.close()
