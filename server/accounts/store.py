"""The SQL of the account aggregate: users and their wallets."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg import AsyncConnection


async def insert_user_with_wallet(
    conn: AsyncConnection, user_id: uuid.UUID, email: str, password_hash: str, now: datetime
) -> bool:
    """Insert the user and an empty wallet; False (nothing written) if the email is taken."""
    cursor = await conn.execute(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (email) DO NOTHING RETURNING id",
        (user_id, email, password_hash, now),
    )
    if await cursor.fetchone() is None:
        return False
    await conn.execute(
        "INSERT INTO wallets (user_id, balance, updated_at) VALUES (%s, 0, %s)", (user_id, now)
    )
    return True


async def find_credentials(conn: AsyncConnection, email: str) -> tuple[uuid.UUID, str] | None:
    """(user id, password hash) of the account with this email, if any."""
    cursor = await conn.execute("SELECT id, password_hash FROM users WHERE email = %s", (email,))
    row = await cursor.fetchone()
    return (row[0], row[1]) if row else None
