"""WalletService through the public API: credentials, bounds, ledger, idempotency."""

from __future__ import annotations

import uuid

import grpc
import pytest

from concert.v1 import wallet_pb2
from server.app import App
from tests.booking.helpers import money_totals, scalar
from tests.fans import new_fan
from tests.support import ADMIN, Stubs, bearer, error_details


async def failure(call: object) -> tuple[str, str | None, set[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = error_details(caught.value)
    return details.code.name, details.reason, details.bad_fields


async def test_credentials_decide_whose_wallet(stubs: Stubs) -> None:
    fan, other = await new_fan(stubs), await new_fan(stubs)
    charge = wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=500)
    assert (await stubs.wallet.Charge(charge, metadata=fan.session_metadata)).balance == 500
    assert (await stubs.wallet.Charge(charge, metadata=ADMIN)).balance == 1000
    assert await failure(stubs.wallet.Charge(charge, metadata=other.session_metadata)) == (
        "PERMISSION_DENIED",
        "NOT_WALLET_OWNER",
        set(),
    )
    for metadata in ((), bearer("forged.credential"), bearer(fan.session_token + "x")):
        assert await failure(stubs.wallet.Charge(charge, metadata=metadata)) == (
            "UNAUTHENTICATED",
            "INVALID_CREDENTIALS",
            set(),
        )
    balance = await stubs.wallet.GetBalance(
        wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=fan.session_metadata
    )
    assert balance.balance == 1000


async def test_session_expiry_is_unauthenticated(app: App, stubs: Stubs) -> None:
    fan = await new_fan(stubs)
    app.ctx.clock.advance(app.ctx.settings.session_ttl_seconds + 1)  # type: ignore[attr-defined]
    request = wallet_pb2.GetBalanceRequest(user_id=fan.user_id)
    assert (await failure(stubs.wallet.GetBalance(request, metadata=fan.session_metadata)))[0] == (
        "UNAUTHENTICATED"
    )


async def test_bounds_unknown_users_and_the_balance_limit(app: App, stubs: Stubs) -> None:
    fan = await new_fan(stubs)
    for amount in (0, -1, 10_000_001):
        assert await failure(
            stubs.wallet.Charge(
                wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=amount), metadata=ADMIN
            )
        ) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT", {"amount"})
    unknown = str(uuid.uuid4())
    assert await failure(
        stubs.wallet.Charge(wallet_pb2.ChargeRequest(user_id=unknown, amount=1), metadata=ADMIN)
    ) == ("NOT_FOUND", "USER_NOT_FOUND", set())
    assert await failure(
        stubs.wallet.GetBalance(wallet_pb2.GetBalanceRequest(user_id=unknown), metadata=ADMIN)
    ) == ("NOT_FOUND", "USER_NOT_FOUND", set())
    assert (
        await failure(
            stubs.wallet.GetBalance(wallet_pb2.GetBalanceRequest(user_id="x"), metadata=ADMIN)
        )
    )[2] == {"user_id"}

    for _ in range(100):
        await stubs.wallet.Charge(
            wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=10_000_000), metadata=ADMIN
        )
    assert await failure(
        stubs.wallet.Charge(wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=1), metadata=ADMIN)
    ) == ("FAILED_PRECONDITION", "BALANCE_LIMIT_EXCEEDED", set())
    totals = await money_totals(app.ctx)
    assert totals["balances"] == totals["ledger"] == 1_000_000_000


async def test_charge_is_idempotent_and_the_ledger_append_only(app: App, stubs: Stubs) -> None:
    fan = await new_fan(stubs)
    request = wallet_pb2.ChargeRequest(
        user_id=fan.user_id, amount=700, request_id=str(uuid.uuid4())
    )
    first = await stubs.wallet.Charge(request, metadata=ADMIN)
    assert await stubs.wallet.Charge(request, metadata=ADMIN) == first
    request.amount = 800
    assert (await failure(stubs.wallet.Charge(request, metadata=ADMIN)))[1] == "REQUEST_ID_REUSED"
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM wallet_ledger") == 1
        with pytest.raises(Exception, match="append-only"):
            await conn.execute("UPDATE wallet_ledger SET amount = 1")
        with pytest.raises(Exception, match="balance"):
            await conn.execute("UPDATE wallets SET balance = -1")
