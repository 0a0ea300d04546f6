"""Holding a hashing lane's places taken, for tests of what happens beyond them;
what state a hashing worker process is in; a junk hash stopped by a proven one."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.accounts.kdf import hash_password_blocking
from server.accounts.passwords import HashingLane, PasswordHasher
from tests.support import eventually


@contextmanager
def hashes_held_back(lane: HashingLane) -> Iterator[asyncio.Event]:
    """Calls that take a place in the lane wait at their hash until the event is
    set (at the latest, on leaving the block): their places stay taken meanwhile."""
    release = asyncio.Event()
    run = lane.run

    async def held_back(function: Any, *args: object) -> Any:
        await release.wait()
        return await run(function, *args)

    lane.run = held_back  # type: ignore[method-assign]
    try:
        yield release
    finally:
        release.set()
        lane.run = run  # type: ignore[method-assign]


def process_state(pid: int) -> str:
    """A process's state letter in /proc (R running, S sleeping, T stopped, Z
    zombie), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


async def a_junk_hash_stops_while_a_proven_one_runs(
    fans: PasswordHasher, junk: PasswordHasher
) -> None:
    """A junk hash already running in `junk`'s open lane stops where it is (its
    worker is stopped, not busy) while `fans`'s proven lane hashes, and
    finishes, right, once that lane is idle. The same hasher twice: one process."""
    slow = hash_password_blocking("a password", 17)  # long: stopped, it cannot end
    release, proven_started = threading.Event(), threading.Event()

    def proven_hash() -> None:
        proven_started.set()
        release.wait(timeout=10)

    try:
        worker = await junk.open.run(os.getpid)
        guess = asyncio.ensure_future(junk.verify("a password", slow))
        await eventually(lambda: process_state(worker) == "R", "the junk hash runs")
        proven = asyncio.ensure_future(fans.proven.run(proven_hash))
        await asyncio.to_thread(proven_started.wait, 10)
        # (A helper module: pytest does not rewrite these asserts, so they say it.)
        # SIGSTOP takes hold when the kernel next schedules the worker: a moment.
        await eventually(lambda: process_state(worker) == "T", "the junk worker is stopped")
        await asyncio.sleep(0.3)
        state = process_state(worker)
        assert not guess.done() and state == "T", f"the junk hash went on ({state!r})"
        release.set()
        await proven
        await eventually(lambda: process_state(worker) != "T", "the worker goes on")
        assert await guess is True, "the junk hash's answer is wrong"
    finally:
        release.set()
