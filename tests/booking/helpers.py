"""Service-layer helpers: fans, concerts and money set up directly.

The use cases are called with a Fan built here (a user, an empty wallet and an
admitted live queue token, written through the accounts' and the queue's
stores), so they are tested without the gRPC layer and its gate. The gRPC
tests use tests.fans instead.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import AsyncConnection

from concert.v1 import admin_pb2, wallet_pb2
from server.accounts.store import insert_user_with_wallet
from server.booking.concerts import create_concert
from server.context import ServiceContext
from server.db.unit_of_work import unit_of_work
from server.fan import Fan
from server.queue import store as queue_store
from server.wallet.balance import WalletCaller, charge_wallet

OPERATOR = WalletCaller(user_id=None)


async def make_fan(ctx: ServiceContext, balance: int = 0) -> Fan:
    """A user with a wallet (the accounts' store) and an admitted live queue token
    (the queue's store: the first token, then presence records its admission)."""
    now = ctx.clock.now()
    user_id, ttl = uuid.uuid4(), timedelta(seconds=ctx.settings.token_ttl_seconds)
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        assert await insert_user_with_wallet(
            unit.conn, user_id, f"{user_id.hex}@example.com", "x", now
        )
    async with ctx.pool.connection() as conn:
        token = await queue_store.claim_first_token(conn, uuid.uuid4(), user_id, now, ttl)
        assert token is not None
        token = await queue_store.touch_token(
            conn, token.token_id, (token.user_id, token.queue_number), now, ttl, admitted=True
        )
        assert token is not None and token.admitted_at is not None
    if balance:
        await charge_wallet(
            ctx, OPERATOR, wallet_pb2.ChargeRequest(user_id=str(user_id), amount=balance)
        )
    return Fan(user_id=user_id, token_id=token.token_id, queue_number=token.queue_number)


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
