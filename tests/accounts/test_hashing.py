"""Password hashes: parameters recorded in the hash; hashing off the event loop."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from concert.v1 import account_pb2
from server.accounts.kdf import hash_password_blocking, verify_password_blocking
from server.accounts.passwords import PasswordHasher
from server.accounts.throttle import PAIR_LIMIT
from server.config import Settings
from tests.support import Stubs


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(password_hash_cost=14)  # the production cost


def test_a_hash_verifies_with_its_own_parameters_whatever_the_current_cost() -> None:
    cheap = hash_password_blocking("open sesame", 10)
    dearer = hash_password_blocking("open sesame", 12)
    assert cheap.split("$")[:4] == ["scrypt", "10", "8", "1"]
    assert verify_password_blocking("open sesame", cheap)
    assert verify_password_blocking("open sesame", dearer)
    assert not verify_password_blocking("open sesame!", cheap)
    assert not verify_password_blocking("open sesame", "garbage")
    assert not verify_password_blocking("open sesame", "scrypt$x$8$1$AA$AA")
    assert cheap != hash_password_blocking("open sesame", 10)  # salted


async def test_unknown_user_still_costs_a_hash() -> None:
    hasher = PasswordHasher(10)
    try:
        assert not await hasher.verify("anything", None)
        assert hasher._decoy is not None
    finally:
        hasher.close()


async def test_the_server_keeps_answering_while_sign_ins_are_hashed(stubs: Stubs) -> None:
    """A storm of production-cost hashes runs in threads; a cheap call is not stuck behind it."""
    await stubs.account.SignUp(
        account_pb2.SignUpRequest(email="storm@example.com", password="correct horse")
    )
    request = account_pb2.SignInRequest(email="storm@example.com", password="correct horse")
    # As many as the sign-in budget of one (email, address) lets in at once.
    storm = [asyncio.ensure_future(stubs.account.SignIn(request)) for _ in range(PAIR_LIMIT)]
    await asyncio.sleep(0)
    with pytest.raises(grpc.aio.AioRpcError):  # validation error: answered without a hash
        await stubs.account.SignIn(account_pb2.SignInRequest(email="", password=""))
    unfinished = sum(1 for call in storm if not call.done())
    replies = await asyncio.gather(*storm)
    assert {r.user_id for r in replies} and len(replies) == PAIR_LIMIT
    # Production-cost hashes of ~40 ms each on a few cores; the cheap call came
    # back while some were still being hashed.
    assert unfinished > 0
