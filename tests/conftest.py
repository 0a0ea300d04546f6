"""Fixtures: a real PostgreSQL, a fresh database, the server in-process.

By default the tests start an embedded PostgreSQL (server.db.embedded) of their own;
CONCERT_TEST_DATABASE_URL points them at an external server instead, where
each run creates and drops its own database. Every test that uses `app`
starts from empty tables, a FakeClock and a server on a free port.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
import pytest
from psycopg import sql

from server.app import App, build_app
from server.clock import FakeClock
from server.config import Settings
from server.db.embedded import open_cluster
from server.db.migrate import migrate
from tests.support import TEST_ADMIN_KEY, Stubs

# Tables whose rows survive between tests: the schema record and the signing keys.
_KEPT_TABLES = {"schema_migrations", "server_secrets", "signing_keys"}


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server to create test databases on."""
    external = os.environ.get("CONCERT_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="concert-test-pg-") as directory:
        cluster = open_cluster(Path(directory) / "pgdata")
        try:
            yield cluster.url
        finally:
            cluster.close()


def _with_database(url: str, database: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = database
    return psycopg.conninfo.make_conninfo(**conninfo)


@pytest.fixture(scope="session")
def create_database(postgres_server_url: str) -> Iterator[object]:
    """A factory of fresh, empty databases, all dropped at the end of the run."""
    created: list[str] = []

    def create() -> str:
        name = f"concert_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_database(postgres_server_url, name)

    yield create
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
async def database_url(create_database) -> str:  # type: ignore[no-untyped-def]
    """The migrated database the in-process servers of this run share (emptied per test)."""
    url: str = create_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings() -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        admin_key=TEST_ADMIN_KEY,
        pool_min_size=2,
        pool_max_size=20,
        shutdown_grace_seconds=1.0,
        seed_demo=False,
    )


async def empty_tables(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in await cursor.fetchall() if row[0] not in _KEPT_TABLES]
        if tables:
            await conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )
        cursor = await conn.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
        )
        for (sequence,) in await cursor.fetchall():
            await conn.execute(
                sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(sequence))
            )


@pytest.fixture
async def app(database_url: str, settings: Settings, clock: FakeClock) -> AsyncIterator[App]:
    """The whole service, in-process, on a free port, over empty tables."""
    await empty_tables(database_url)
    application = await build_app(
        settings, database_url=database_url, clock=clock, start_jobs=False
    )
    await application.start()
    try:
        yield application
    finally:
        await application.stop(grace=0.5)


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(app.address) as chan:
        yield chan


@pytest.fixture
def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs.on(channel)
