"""Demo data: created through the real use cases, once, and usable end to end."""

from __future__ import annotations

import asyncio

from concert.v1 import account_pb2, concert_pb2, queue_pb2, wallet_pb2
from server.app import App
from server.demo import DEMO_BALANCE, DEMO_EMAIL, DEMO_PASSWORD, DEMO_SEATS_PER_DATE, seed_demo
from tests.support import Stubs, bearer


async def test_seed_demo_creates_a_bookable_concert_and_a_fan_with_money(
    app: App, stubs: Stubs
) -> None:
    assert await seed_demo(app.ctx, app.accounts) is True
    assert await seed_demo(app.ctx, app.accounts) is False  # the second run finds it there

    session = await stubs.account.SignIn(
        account_pb2.SignInRequest(email=DEMO_EMAIL, password=DEMO_PASSWORD)
    )
    balance = await stubs.wallet.GetBalance(
        wallet_pb2.GetBalanceRequest(user_id=session.user_id),
        metadata=bearer(session.session_token),
    )
    assert balance.balance == DEMO_BALANCE

    issued = await stubs.queue.IssueToken(
        queue_pb2.IssueTokenRequest(session_token=session.session_token)
    )
    token = bearer(issued.token)
    concerts = await stubs.concert.ListConcerts(concert_pb2.ListConcertsRequest(), metadata=token)
    assert len(concerts.concerts) == 1
    dates = await stubs.concert.ListAvailableDates(
        concert_pb2.ListAvailableDatesRequest(concert_id=concerts.concerts[0].concert_id),
        metadata=token,
    )
    assert len(dates.dates) == 3
    assert all(d.available_seat_count == DEMO_SEATS_PER_DATE for d in dates.dates)


async def test_concurrent_seeders_create_the_demo_once(app: App) -> None:
    results = await asyncio.gather(*(seed_demo(app.ctx, app.accounts) for _ in range(3)))
    assert sorted(results) == [False, False, True]
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM concerts")
        assert (await cursor.fetchone()) == (1,)
        cursor = await conn.execute("SELECT count(*) FROM users WHERE email = %s", (DEMO_EMAIL,))
        assert (await cursor.fetchone()) == (1,)
