"""Refusals of password calls paced beyond a rate (server/accounts/pacing.py).

- Within the rate, a refused call is answered at once, as before.
- Beyond it, the call waits its retry delay on the server and tries once more:
  it goes on if the line has room by then, and is refused if not.
- A call that gets a place is never held, however many refusals went before.
- Held calls are bounded; beyond the bound, refusals go at once.

The delay and the rate's clock are injected: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from concert.v1 import account_pb2, queue_pb2
from server.accounts.pacing import RefusalPacing
from server.accounts.passwords import HashingBusy
from server.app import App
from server.config import Settings
from server.errors import ErrorReason, ResourceExhausted, Unauthenticated
from tests.accounts.lanes import hashes_held_back
from tests.fans import new_fan
from tests.observability.scrape import scrape, value
from tests.support import Stubs, error_details, eventually


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(metrics_listen="127.0.0.1:0")


class _Delays:
    """The pacing's sleep: records each delay, returns when released."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.released = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self.released.wait()


class _Time:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pacing(at_once: float, delays: _Delays, time: _Time, max_held: int = 100) -> RefusalPacing:
    return RefusalPacing(at_once, max_held=max_held, monotonic=time, sleep=delays)


async def _refused() -> str:
    raise HashingBusy


async def test_within_the_rate_refusals_go_at_once_and_other_errors_are_not_paced() -> None:
    delays, time = _Delays(), _Time()
    pacing = _pacing(3, delays, time)

    async def wrong_password() -> str:
        raise Unauthenticated(ErrorReason.ERROR_REASON_INVALID_CREDENTIALS, "no")

    for _ in range(10):  # not a refusal: neither held nor counted
        with pytest.raises(Unauthenticated):
            await pacing.attempt(wrong_password)
    for _ in range(3):
        with pytest.raises(HashingBusy):
            await pacing.attempt(_refused)
    assert delays.asked == []
    assert pacing.held == 0


async def test_beyond_the_rate_a_refused_call_waits_its_delay_then_tries_once_more() -> None:
    delays, time = _Delays(), _Time()
    pacing = _pacing(1, delays, time)
    tries: list[str] = []

    async def refused_then_room() -> str:
        tries.append("try")
        if len(tries) == 1:
            raise HashingBusy
        return "hashed"

    with pytest.raises(HashingBusy):
        await pacing.attempt(_refused)  # the rate's one refusal at once
    held = asyncio.ensure_future(pacing.attempt(refused_then_room))
    await asyncio.sleep(0)
    assert not held.done() and pacing.held == 1
    assert delays.asked == [pacing.retry_after_seconds]
    delays.released.set()
    assert await held == "hashed"  # the second try found room
    assert tries == ["try", "try"] and pacing.held == 0

    async def always_refused() -> str:
        tries.append("try")
        raise HashingBusy

    tries.clear()
    with pytest.raises(HashingBusy):
        await pacing.attempt(always_refused)
    assert tries == ["try", "try"]  # refused after its second try, not a third


async def test_a_refusal_asking_a_longer_wait_is_held_and_answered_without_a_second_try() -> None:
    delays, time = _Delays(), _Time()
    pacing = _pacing(0, delays, time)
    tries: list[str] = []

    async def budget_spent() -> str:
        tries.append("try")
        raise ResourceExhausted(
            ErrorReason.ERROR_REASON_TOO_MANY_ATTEMPTS, "wait", retry_after_seconds=240.0
        )

    held = asyncio.ensure_future(pacing.attempt(budget_spent))
    await asyncio.sleep(0)
    assert not held.done() and pacing.held == 1
    delays.released.set()
    with pytest.raises(ResourceExhausted) as refused:
        await held
    assert refused.value.retry_after_seconds == 240.0
    assert tries == ["try"]


async def test_the_rate_refills_with_time() -> None:
    delays, time = _Delays(), _Time()
    pacing = _pacing(2, delays, time)
    for _ in range(2):
        with pytest.raises(HashingBusy):
            await pacing.attempt(_refused)
    time.now += 0.5  # one refusal's worth at 2 a second
    with pytest.raises(HashingBusy):
        await pacing.attempt(_refused)
    assert delays.asked == []
    held = asyncio.ensure_future(pacing.attempt(_refused))
    await asyncio.sleep(0)
    assert delays.asked == [pacing.retry_after_seconds]
    delays.released.set()
    with pytest.raises(HashingBusy):
        await held


async def test_held_calls_are_bounded() -> None:
    delays, time = _Delays(), _Time()
    pacing = _pacing(1, delays, time, max_held=2)
    with pytest.raises(HashingBusy):
        await pacing.attempt(_refused)
    calls = [asyncio.ensure_future(pacing.attempt(_refused)) for _ in range(5)]
    await asyncio.sleep(0)
    done = [c for c in calls if c.done()]
    assert len(done) == 3 and pacing.held == 2  # beyond the bound: at once
    assert all(isinstance(c.exception(), HashingBusy) for c in done)
    delays.released.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, HashingBusy) for r in results)
    assert pacing.held == 0


async def test_a_storm_of_sign_ups_beyond_the_rate_waits_on_the_server_then_gets_places(
    app: App, stubs: Stubs
) -> None:
    """The open lane's places taken (their hashes held back), concurrent SignUps
    beyond them: the rate's worth are refused at once with RetryInfo, the rest
    wait on the server, and so does a password IssueToken (/metrics says so).
    A fan's SignIn with a place meanwhile answers at once. Once the places
    free, the held calls try again: the IssueToken gets its token, and the
    users table holds exactly the accounts whose SignUp answered OK."""
    fan = await new_fan(stubs)
    delays = _Delays()
    app.accounts.pacing = _pacing(2, delays, _Time())
    lane = app.accounts.hasher.open

    def sign_up(i: int) -> asyncio.Future[Any]:
        return asyncio.ensure_future(
            stubs.account.SignUp(
                account_pb2.SignUpRequest(email=f"paced-{i}-{fan.email}", password="a fine pw 1")
            )
        )

    with hashes_held_back(lane):
        holding = [sign_up(i) for i in range(lane.places)]
        await eventually(lambda: lane.in_flight == lane.places, "the places taken")
        beyond = [sign_up(lane.places + i) for i in range(6)]
        await eventually(
            lambda: app.accounts.pacing.held == 4 and sum(c.done() for c in beyond) == 2,
            "two refused at once, four held",
        )
        done = {c for c in beyond if c.done()}
        assert len(done) == 2  # the rate's two, refused at once...
        for call in done:
            details = error_details(call.exception())
            assert (details.code, details.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "PASSWORD_HASHING_BUSY",
            )
            assert details.retry is not None
        # ...the other four wait on the server, and so does a password IssueToken
        # refused now; a call with a place does not.
        issue = asyncio.ensure_future(
            stubs.queue.IssueToken(
                queue_pb2.IssueTokenRequest(
                    password=queue_pb2.PasswordCredential(email=fan.email, password=fan.password)
                )
            )
        )
        await eventually(lambda: app.accounts.pacing.held == 5, "the IssueToken held too")
        signed_in = await stubs.account.SignIn(
            account_pb2.SignInRequest(
                email=fan.email, password=fan.password, previous_session_token=fan.session_token
            )
        )
        assert signed_in.user_id == fan.user_id
        assert app.accounts.pacing.held == 5
        assert app.metrics_port
        samples = await scrape(app.metrics_port)  # what an operator sees meanwhile
        assert value(samples, "concert_password_refusals_held") == 5
        assert value(samples, "concert_password_hashing_open_in_flight") == lane.places
    await asyncio.gather(*holding)
    delays.released.set()  # the held calls try again, with the places free
    results = await asyncio.gather(*beyond, return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(answered) == 4
    assert (await issue).token
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM users WHERE email LIKE %s", (f"paced-%-{fan.email}",)
        )
        assert await cursor.fetchone() == (lane.places + 4,)
