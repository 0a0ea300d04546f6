"""AccountService through the public API: SignUp, SignIn, their errors."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from concert.v1 import account_pb2
from server.accounts.sessions import verify_session
from server.app import App
from server.clock import FakeClock
from tests.support import Stubs, error_details


async def sign_up(stubs: Stubs, email: str, password: str = "correct horse", **kw: str):
    return await stubs.account.SignUp(
        account_pb2.SignUpRequest(email=email, password=password, **kw)
    )


async def test_sign_up_normalises_the_email_and_creates_an_empty_wallet(
    stubs: Stubs, app: App
) -> None:
    reply = await sign_up(stubs, "  Fan.One@Example.COM ")
    assert reply.email == "fan.one@example.com"
    user_id = uuid.UUID(reply.user_id)
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT u.password_hash, w.balance FROM users u JOIN wallets w ON w.user_id = u.id"
            " WHERE u.id = %s",
            (user_id,),
        )
        stored_hash, balance = await cursor.fetchone()
    assert balance == 0
    assert stored_hash.startswith("scrypt$10$8$1$")
    assert "correct horse" not in stored_hash


async def test_taken_email_is_already_exists(stubs: Stubs) -> None:
    await sign_up(stubs, "taken@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sign_up(stubs, "TAKEN@example.com", "another password")
    details = error_details(err.value)
    assert details.code == grpc.StatusCode.ALREADY_EXISTS
    assert details.reason == "EMAIL_TAKEN"


async def test_concurrent_sign_ups_with_one_email_create_one_account(
    stubs: Stubs, app: App
) -> None:
    # All ten reach the database race (none refused for a full hashing line).
    app.accounts.hasher.open.places = 10
    results = await asyncio.gather(
        *(sign_up(stubs, "race@example.com") for _ in range(10)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    for failure in results:
        if isinstance(failure, grpc.aio.AioRpcError):
            assert error_details(failure).reason == "EMAIL_TAKEN"
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM users")
        assert (await cursor.fetchone())[0] == 1
        cursor = await conn.execute("SELECT count(*) FROM wallets")
        assert (await cursor.fetchone())[0] == 1


async def test_sign_up_request_id_replays_the_first_answer(stubs: Stubs) -> None:
    request_id = str(uuid.uuid4())
    first = await sign_up(stubs, "retry@example.com", request_id=request_id)
    again = await sign_up(stubs, "retry@example.com", request_id=request_id)
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sign_up(stubs, "other@example.com", request_id=request_id)
    assert error_details(err.value).reason == "REQUEST_ID_REUSED"


@pytest.mark.parametrize(
    ("email", "password", "request_id", "bad"),
    [
        ("not-an-email", "long enough", "", {"email"}),
        ("", "long enough", "", {"email"}),
        ("a@b.co", "short", "", {"password"}),
        ("a@b.co", "x" * 129, "", {"password"}),
        ("x" * 250 + "@b.co", "long enough", "", {"email"}),
        ("bad", "short", "not-a-uuid", {"email", "password", "request_id"}),
    ],
)
async def test_sign_up_names_every_bad_field(
    stubs: Stubs, email: str, password: str, request_id: str, bad: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sign_up(stubs, email, password, request_id=request_id)
    details = error_details(err.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == bad


async def test_sign_in_returns_a_session_that_verifies(
    stubs: Stubs, app: App, clock: FakeClock
) -> None:
    account = await sign_up(stubs, "fan@example.com")
    reply = await stubs.account.SignIn(
        account_pb2.SignInRequest(email=" FAN@example.com", password="correct horse")
    )
    assert reply.user_id == account.user_id
    expire = reply.expire_time.ToDatetime().replace(tzinfo=clock.now().tzinfo)
    assert (expire - clock.now()).total_seconds() == app.ctx.settings.session_ttl_seconds
    session = verify_session(app.ctx.signer, reply.session_token, clock.now())
    assert session is not None and str(session.user_id) == account.user_id
    clock.advance(app.ctx.settings.session_ttl_seconds)
    assert verify_session(app.ctx.signer, reply.session_token, clock.now()) is None
    assert verify_session(app.ctx.signer, reply.session_token[:-2] + "AA", clock.now()) is None


async def test_unknown_email_and_wrong_password_answer_alike(stubs: Stubs) -> None:
    await sign_up(stubs, "known@example.com")
    answers = []
    for email, password in (("known@example.com", "wrong password"), ("nobody@x.io", "whatever1")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.account.SignIn(account_pb2.SignInRequest(email=email, password=password))
        details = error_details(err.value)
        answers.append((details.code, details.reason, details.message))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_sign_in_validates_its_fields(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.account.SignIn(account_pb2.SignInRequest(email="", password="x" * 200))
    details = error_details(err.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == {"email", "password"}


async def test_repeated_failures_are_throttled_with_retry_info(stubs: Stubs) -> None:
    await sign_up(stubs, "target@example.com")
    for _ in range(10):
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.account.SignIn(
                account_pb2.SignInRequest(email="target@example.com", password="guess-guess")
            )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.account.SignIn(
            account_pb2.SignInRequest(email="target@example.com", password="correct horse")
        )
    details = error_details(err.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "TOO_MANY_ATTEMPTS"
    assert details.retry is not None and details.retry.retry_delay.seconds > 0
