"""Fans for tests: signed up, signed in, and (if asked) admitted through the queue.

Shared by every feature's tests. Goes through the public API only:
SignUp + SignIn (+ IssueToken with the session credential).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from concert.v1 import account_pb2, queue_pb2
from tests.support import Stubs, bearer, error_details

T = TypeVar("T")


@dataclass
class SignedUpFan:
    user_id: str
    email: str
    password: str
    session_token: str

    @property
    def session_metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.session_token)


@dataclass
class AdmittedFan(SignedUpFan):
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


async def new_fan(
    stubs: Stubs, email: str | None = None, password: str = "correct horse battery"
) -> SignedUpFan:
    """A fresh account (with its empty wallet), signed in.

    Hundreds of these at once fill the server's bounded hashing line: like any
    client, they retry a PASSWORD_HASHING_BUSY after its RetryInfo (shortened).
    """
    email = email or f"fan-{uuid.uuid4().hex[:12]}@example.com"
    account = await _while_busy(
        lambda: stubs.account.SignUp(account_pb2.SignUpRequest(email=email, password=password))
    )
    session = await _while_busy(
        lambda: stubs.account.SignIn(account_pb2.SignInRequest(email=email, password=password))
    )
    return SignedUpFan(account.user_id, account.email, password, session.session_token)


async def _while_busy(call: Callable[[], Awaitable[T]]) -> T:
    for _ in range(2_000):
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if error_details(err).reason != "PASSWORD_HASHING_BUSY":
                raise
            await asyncio.sleep(random.uniform(0.005, 0.05))
    raise AssertionError("the hashing line never had room")


async def admitted_fan(stubs: Stubs, email: str | None = None) -> AdmittedFan:
    """A fresh fan holding an admitted queue token.

    Raises AssertionError when the token is not admitted: tests that need more
    admitted fans than the capacity (Settings' default, 100) raise it first with
    stubs.admin.SetAdmission(..., metadata=ADMIN).
    """
    fan = await new_fan(stubs, email)
    issued = await stubs.queue.IssueToken(
        queue_pb2.IssueTokenRequest(session_token=fan.session_token)
    )
    assert issued.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED, (
        f"queue number {issued.status.queue_number} is not admitted "
        f"({issued.status.people_ahead} ahead): raise the capacity with SetAdmission"
    )
    return AdmittedFan(fan.user_id, fan.email, fan.password, fan.session_token, issued.token)
