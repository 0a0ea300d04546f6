"""Ordered SQL migrations, applied once each, safe when processes race.

Files in server/db/migrations are named NNNN_description.sql and applied in
order, each in its own transaction, recorded in schema_migrations with a
checksum. A session advisory lock makes concurrent starters take turns: the
first applies, the others find nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from psycopg import AsyncConnection, sql

from server.db.locks import MIGRATIONS_LOCK
from server.db.unit_of_work import unit_on

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the code's."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


# The server's own migrations; the sandbox payment module keeps its own
# (server/payment_module/migrations) for a database of its own.
SERVER_MIGRATIONS = "server.db.migrations"


def load_migrations(package: str = SERVER_MIGRATIONS) -> list[Migration]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {versions}")
    return found


async def migrate(
    conn: AsyncConnection, *, up_to: int | None = None, package: str = SERVER_MIGRATIONS
) -> list[int]:
    """Apply pending migrations on an autocommit connection; return the versions applied.

    up_to: stop after that version (tests build a database of an older schema).
    package: where the migration files are (another service's own database).
    """
    migrations = [m for m in load_migrations(package) if up_to is None or m.version <= up_to]
    await conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATIONS_LOCK)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
        applied = {row[0]: row[1] for row in await cursor.fetchall()}
        done = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} changed after it "
                        "was applied; add a new migration instead"
                    )
                continue
            async with unit_on(conn) as unit:
                await unit.run_script(sql.SQL(migration.sql))
                await unit.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATIONS_LOCK)
