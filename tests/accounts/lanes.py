"""Holding a hashing lane's places taken, for tests of what happens beyond them;
and what state a hashing worker process is in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.accounts.passwords import HashingLane


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
