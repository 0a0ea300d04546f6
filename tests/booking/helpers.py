"""Service-layer helpers: fans, concerts and money set up directly.

The use cases are called with a Fan built here (a user, an empty wallet and a
live queue token written with SQL), so they are tested without the gRPC layer
and its gate. The gRPC tests use tests.fans instead.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import AsyncConnection

from concert.v1 import admin_pb2, wallet_pb2
from server.booking.concerts import create_concert
from server.context import ServiceContext
from server.fan import Fan
from server.wallet.balance import WalletCaller, charge_wallet

OPERATOR = WalletCaller(user_id=None)


async def make_fan(ctx: ServiceContext, balance: int = 0) -> Fan:
    now = ctx.clock.now()
    user_id, token_id = uuid.uuid4(), uuid.uuid4()
    async with ctx.pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (%s, %s, 'x', %s)",
            (user_id, f"{user_id.hex}@example.com", now),
        )
        await conn.execute(
            "INSERT INTO wallets (user_id, balance, updated_at) VALUES (%s, 0, %s)",
            (user_id, now),
        )
        cursor = await conn.execute(
            "INSERT INTO queue_tokens (id, user_id, queue_number, state, issued_at, expires_at,"
            " admitted_at) VALUES (%s, %s, nextval('queue_numbers'), 'live', %s, %s, %s)"
            " RETURNING queue_number",
            (token_id, user_id, now, now + timedelta(seconds=ctx.settings.token_ttl_seconds), now),
        )
        row = await cursor.fetchone()
        assert row is not None
    if balance:
        await charge_wallet(
            ctx, OPERATOR, wallet_pb2.ChargeRequest(user_id=str(user_id), amount=balance)
        )
    return Fan(user_id=user_id, token_id=token_id, queue_number=row[0])


def concert_request(
    ctx: ServiceContext, *, seats: int = 10, price: int = 1000, dates: int = 1, **fields: object
) -> admin_pb2.CreateConcertRequest:
    specs = []
    for day in range(dates):
        start = Timestamp()
        start.FromDatetime(ctx.clock.now() + timedelta(days=7 + day))
        specs.append(
            admin_pb2.ConcertDateSpec(
                start_time=start,
                seats=[admin_pb2.SeatSpec(seat_number=n, price=price) for n in range(1, seats + 1)],
            )
        )
    return admin_pb2.CreateConcertRequest(
        title=str(fields.get("title", "Midnight Orchestra")),
        venue=str(fields.get("venue", "Olympic Hall")),
        dates=specs,
    )


async def make_concert(
    ctx: ServiceContext, *, seats: int = 10, price: int = 1000, dates: int = 1
) -> admin_pb2.CreateConcertResponse:
    return await create_concert(ctx, concert_request(ctx, seats=seats, price=price, dates=dates))


async def scalar(conn: AsyncConnection, query: str, *params: object) -> object:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def money_totals(ctx: ServiceContext) -> dict[str, int]:
    """Every way of counting the money, which must agree."""
    async with ctx.pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT
              (SELECT coalesce(sum(balance), 0) FROM wallets),
              (SELECT coalesce(sum(amount), 0) FROM wallet_ledger),
              (SELECT coalesce(sum(amount), 0) FROM wallet_ledger WHERE kind = 'charge'),
              (SELECT coalesce(sum(-amount), 0) FROM wallet_ledger WHERE kind = 'payment'),
              (SELECT coalesce(sum(amount), 0) FROM wallet_ledger WHERE kind = 'refund'),
              (SELECT coalesce(sum(amount), 0) FROM payments WHERE state = 'completed'),
              (SELECT count(*) FROM wallets w WHERE w.balance <> (
                   SELECT coalesce(sum(amount), 0) FROM wallet_ledger l
                    WHERE l.user_id = w.user_id))
            """
        )
        row = await cursor.fetchone()
    assert row is not None
    keys = ("balances", "ledger", "charges", "debits", "refunds", "payments", "mismatched")
    return dict(zip(keys, (int(v) for v in row), strict=True))
