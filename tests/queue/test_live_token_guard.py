"""The SQL guards that let a write go out before Python has seen the rows it
checks (ReserveSeat and Pay in one message) say exactly what the Python rules
say: LIVE_TOKEN_GUARD what insist_live accepts, held_reservation_guard() what
hold_state calls held. A guard laxer than its rule would commit a hold or a sale
that the caller is then told was refused."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pytest

from server.app import App
from server.booking.holds import held_reservation_guard, hold_state
from server.errors import ServiceError
from server.fan import Fan
from server.queue.completion import LIVE_TOKEN_GUARD, insist_live, live_token_params
from server.queue.store import TOKEN_COLUMNS, TokenRow
from tests.queue.helpers import insert_users

STATES = ("live", "completed", "expired")
EXPIRIES = (timedelta(seconds=-5), timedelta(0), timedelta(seconds=5))


async def test_the_live_token_guard_agrees_with_insist_live(app: App) -> None:
    now = app.ctx.clock.now()
    cases = list(itertools.product(STATES, EXPIRIES, (True, False), (True, False)))
    users = await insert_users(app, len(cases))
    disagreements = []
    async with app.ctx.pool.connection() as conn:
        for number, ((state, expiry, same_user, same_number), (user_id, _, _)) in enumerate(
            zip(cases, users, strict=True), start=1
        ):
            token_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO queue_tokens"
                " (id, user_id, queue_number, state, issued_at, expires_at, ended_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    token_id,
                    user_id,
                    10_000 + number,
                    state,
                    now,
                    now + expiry,
                    None if state == "live" else now,
                ),
            )
            fan = Fan(
                user_id=user_id if same_user else uuid.uuid4(),
                token_id=token_id,
                queue_number=10_000 + number if same_number else 1,
            )
            cursor = await conn.execute(
                f"SELECT {LIVE_TOKEN_GUARD}, {TOKEN_COLUMNS}"
                " FROM queue_tokens WHERE id = %(token)s",
                live_token_params(fan, now),
            )
            row = await cursor.fetchone()
            assert row is not None
            sql_says = bool(row[0])
            try:
                insist_live(TokenRow(*row[1:]), now, fan)
                python_says = True
            except ServiceError:
                python_says = False
            if sql_says != python_says:
                disagreements.append((state, expiry, same_user, same_number, sql_says))
    assert disagreements == []
    assert any(case[0] == "live" for case in cases)  # both answers were reached


@pytest.mark.parametrize("state", ["held", "paid", "cancelled", "expired"])
@pytest.mark.parametrize("expiry", EXPIRIES)
async def test_the_held_reservation_guard_agrees_with_hold_state(
    app: App, state: str, expiry: timedelta
) -> None:
    now = app.ctx.clock.now()
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {held_reservation_guard()} FROM (VALUES (%(state)s, %(expires)s::timestamptz))"
            " AS r(state, expires_at)",
            {"state": state, "expires": now + expiry, "now": now},
        )
        row = await cursor.fetchone()
    assert row is not None
    assert bool(row[0]) == (hold_state(state, now + expiry, now) == "held")
