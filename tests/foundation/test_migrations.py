"""Migrations: applied once, recorded, idempotent, safe when processes race."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from server.db.migrate import load_migrations, migrate


def _recorded(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]


async def test_migrate_twice_applies_nothing_the_second_time(create_database) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        first = await migrate(conn)
        second = await migrate(conn)
    assert first == [m.version for m in load_migrations()]
    assert second == []
    assert _recorded(url) == first


def test_two_processes_migrating_at_once_apply_each_migration_once(create_database) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    env = {**os.environ, "CONCERT_DATABASE_URL": url, "CONCERT_LOG_FORMAT": "json"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "server", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert _recorded(url) == [m.version for m in load_migrations()]
    # Each process reports as a server.lifecycle log line (stderr, JSON here).
    reports = [
        entry["message"]
        for _, err in outputs
        for entry in map(json.loads, err.splitlines())
        if entry["logger"] == "server.lifecycle"
    ]
    assert len(reports) == 3, outputs
    applied_messages = [message for message in reports if message.startswith("applied")]
    assert len(applied_messages) == 1, outputs
