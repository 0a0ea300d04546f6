"""The queue's NOTIFY payload has two encoders: encode_change (Python) and
NOTIFY_STATE_CHANGE (SQL, for statements that count and announce in one round
trip). Every listener decodes both with decode_change: they must agree."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg

from server.app import App
from server.queue import store


async def test_the_sql_payload_decodes_like_the_python_one(app: App, database_url: str) -> None:
    now = app.ctx.clock.now()
    token_id, expires_at = uuid.uuid4(), now + timedelta(seconds=300, microseconds=120_000)
    completed = [(token_id, expires_at), (uuid.uuid4(), expires_at + timedelta(seconds=1))]
    listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {store.CHANNEL}")
        async with app.ctx.pool.connection() as conn:
            cursor = await conn.execute(
                f"WITH {store.ADD_COMPLETED_CTE} SELECT {store.NOTIFY_STATE_CHANGE},"
                " version, window_limit, capacity, paused, completed_count, admitted_total,"
                " updated_at FROM state",
                store.completion_params(completed, now),
            )
            row = await cursor.fetchone()
        assert row is not None
        payload = None
        async for notify in listener.notifies(timeout=5.0):
            payload = notify.payload
            break
    assert payload is not None
    state = store.AdmissionState(*row[1:])
    assert store.decode_change(payload) == (state, completed)
    assert store.decode_change(payload) == store.decode_change(
        store.encode_change(state, completed)
    )
