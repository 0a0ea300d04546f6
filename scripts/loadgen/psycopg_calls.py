"""What a batch of statements costs this process in psycopg, per way of sending it.

    PYTHONPATH=scripts .venv/bin/python -m loadgen.psycopg_calls postgresql://postgres@127.0.0.1/postgres

Prints the client's CPU time and the wall time per call, 2,000 calls each after
200 to warm up, for: one statement alone; BEGIN + statement + COMMIT as three
executes; the same three in one pipeline (what server/db/unit_of_work.py sends);
the same three as one simple-protocol string. The server is CPU-bound on its
event loop on the write path (docs/load-test-report.md, Round 6), so the
client's CPU per call is the figure that matters. Loopback only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import AsyncClientCursor

CALLS = 2_000
WARM_UP = 200
STATEMENT = "SELECT %s::int"


async def measure(url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def alone() -> None:
        await (await conn.execute(STATEMENT, (1,))).fetchall()

    async def three_executes() -> None:
        await conn.execute("BEGIN")
        await (await conn.execute(STATEMENT, (1,))).fetchall()
        await conn.execute("COMMIT")

    async def one_pipeline() -> None:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            cursor = await conn.execute(STATEMENT, (1,))
            await conn.execute("COMMIT")
        await cursor.fetchall()

    async def one_string() -> None:
        cursor = AsyncClientCursor(conn)
        await cursor.execute(f"BEGIN; {cursor.mogrify(STATEMENT, (1,))}; COMMIT")

    ways: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("one statement, alone", alone),
        ("BEGIN + statement + COMMIT, 3 executes", three_executes),
        ("the same, one pipeline", one_pipeline),
        ("the same, one simple-protocol string", one_string),
    ]
    try:
        for name, call in ways:
            for _ in range(WARM_UP):
                await call()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(CALLS):
                await call()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"{name:42s} cpu {1e6 * cpu / CALLS:6.1f} us  wall {1e6 * wall / CALLS:6.1f} us")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(
        measure(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1/postgres")
    )
