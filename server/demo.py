"""Demo data: one concert with three dates and a fan with money, to walk the flow.

Created by `python -m server seed-demo`, and on every embedded start (where it
is a no-op once the demo exists). It goes through the same use cases as the
API, so the demo data obeys every rule real data does.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from concert.v1 import account_pb2, admin_pb2, wallet_pb2
from server.accounts.registration import sign_up
from server.accounts.runtime import AccountRuntime
from server.booking.concerts import create_concert, timestamp
from server.context import ServiceContext
from server.db.locks import LockNamespace
from server.wallet.balance import WalletCaller, charge_wallet

log = logging.getLogger(__name__)

DEMO_EMAIL = "fan@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_BALANCE = 500_000
DEMO_TITLE = "Demo Night"
DEMO_SEATS_PER_DATE = 50


async def seed_demo(ctx: ServiceContext, accounts: AccountRuntime) -> bool:
    """Create the demo concert and fan unless they exist; True if anything was created."""
    async with ctx.pool.connection() as lock_conn:
        # Workers starting together take turns; the later ones find the demo there.
        await lock_conn.execute("SELECT pg_advisory_lock(%s, 0)", (int(LockNamespace.DEMO_SEED),))
        try:
            return await _seed(ctx, accounts)
        finally:
            await lock_conn.execute(
                "SELECT pg_advisory_unlock(%s, 0)", (int(LockNamespace.DEMO_SEED),)
            )


async def _seed(ctx: ServiceContext, accounts: AccountRuntime) -> bool:
    created = False
    async with ctx.pool.connection() as conn:
        cursor = await conn.execute("SELECT 1 FROM concerts WHERE title = %s", (DEMO_TITLE,))
        has_concert = await cursor.fetchone() is not None
        cursor = await conn.execute("SELECT id FROM users WHERE email = %s", (DEMO_EMAIL,))
        fan = await cursor.fetchone()
    if not has_concert:
        await create_concert(ctx, _demo_concert(ctx))
        created = True
    if fan is None:
        account = await sign_up(
            ctx.pool,
            ctx.clock,
            accounts,
            account_pb2.SignUpRequest(email=DEMO_EMAIL, password=DEMO_PASSWORD),
        )
        await charge_wallet(
            ctx,
            WalletCaller(user_id=None),
            wallet_pb2.ChargeRequest(
                user_id=account.user_id, amount=DEMO_BALANCE, request_id=str(uuid.uuid4())
            ),
        )
        created = True
    if created:
        log.info("demo data ready: %s / %s, concert %r", DEMO_EMAIL, DEMO_PASSWORD, DEMO_TITLE)
    return created


def _demo_concert(ctx: ServiceContext) -> admin_pb2.CreateConcertRequest:
    # Three evenings a week from now, 19:00 UTC; the front rows cost more.
    first = (ctx.clock.now() + timedelta(days=7)).replace(
        hour=19, minute=0, second=0, microsecond=0
    )
    seats = [
        admin_pb2.SeatSpec(seat_number=n, price=150_000 if n <= 10 else 99_000)
        for n in range(1, DEMO_SEATS_PER_DATE + 1)
    ]
    return admin_pb2.CreateConcertRequest(
        title=DEMO_TITLE,
        venue="Olympic Hall",
        dates=[
            admin_pb2.ConcertDateSpec(start_time=timestamp(first + timedelta(days=i)), seats=seats)
            for i in range(3)
        ],
    )
