"""Sign-in throttling that holds, and a hasher that cannot be queued without bound.

- A burst of concurrent wrong passwords evaluates at most the budget's worth of
  hashes (the attempt is reserved before the hash), not one per call.
- The attacker's failures do not lock the fan out: the fan's own address has
  its own budget (the address comes from x-forwarded-for only through a trusted
  proxy).
- The budgets are shared by every server process through the database (a burst
  spread over replicas evaluates the budget once), and their table is pruned
  as attempts leave the window, never emptied at once.
- Beyond the hashing threads and their bounded waiting line, a password call is
  refused at once with RESOURCE_EXHAUSTED and RetryInfo.
- A caller who proves a past sign-in hashes in a lane of its own, which the
  anonymous lane's niced worker processes yield the CPU to; a worker killed
  mid-hash costs no call its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from concert.v1 import account_pb2, queue_pb2
from server.accounts import store as accounts_store
from server.accounts.kdf import hash_password_blocking
from server.accounts.passwords import (
    OPEN_LANE_NICENESS,
    HashingBusy,
    HashingLane,
    PasswordHasher,
)
from server.accounts.throttle import (
    ADDRESS_LIMIT,
    EMAIL_LIMIT,
    FAILURE_WINDOW,
    PAIR_LIMIT,
    PRUNE_JOB,
    budget_address,
)
from server.app import App, build_app
from server.client_address import client_address, parse_networks
from server.clock import FakeClock
from server.config import Settings
from server.cpu import available_cpus, cgroup_cpu_quota, cpus_per_process
from tests.accounts.lanes import (
    a_junk_hash_stops_while_a_proven_one_runs,
    hashes_held_back,
    process_state,
)
from tests.fans import new_fan
from tests.support import Stubs, error_details

ATTACKER = "203.0.113.7"
FAN = "198.51.100.20"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The test client stands behind a "proxy" at loopback that names the client.
    return settings.replace(trusted_proxies=parse_networks("127.0.0.1,::1"))


def _from(address: str) -> tuple[tuple[str, str], ...]:
    return (("x-forwarded-for", address),)


async def _sign_in(stubs: Stubs, email: str, password: str, address: str) -> str | None:
    """None on success, else the error's reason."""
    try:
        await stubs.account.SignIn(
            account_pb2.SignInRequest(email=email, password=password), metadata=_from(address)
        )
    except grpc.aio.AioRpcError as err:
        return error_details(err).reason
    return None


async def _stored_attempts(app: App) -> int:
    """Rows of sign_in_attempts: the attempts the budgets count."""
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM sign_in_attempts")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


class _HashCount:
    """How many passwords the apps' hashers evaluate from now on."""

    def __init__(self, *apps: App) -> None:
        self.count = 0
        for application in apps:
            hasher = application.accounts.hasher
            hasher.verify_in_place = self._counting(hasher.verify_in_place)  # type: ignore[method-assign]

    def _counting(self, verify: Callable[..., Awaitable[bool]]) -> Callable[..., Awaitable[bool]]:
        async def counting_verify(lane: HashingLane, password: str, stored: str | None) -> bool:
            self.count += 1
            return await verify(lane, password, stored)

        return counting_verify


async def test_a_burst_of_guesses_evaluates_only_the_budget_and_the_fan_still_gets_in(
    app: App, stubs: Stubs
) -> None:
    fan = await new_fan(stubs)
    hashes = _HashCount(app)
    guesses = await asyncio.gather(
        *(_sign_in(stubs, fan.email, f"wrong password {i}", ATTACKER) for i in range(60))
    )
    # At most the budget evaluated; the rest refused at once, for the budget or
    # for the full hashing line (no hash either way).
    assert hashes.count == PAIR_LIMIT
    assert guesses.count("INVALID_CREDENTIALS") == PAIR_LIMIT
    assert set(guesses) <= {"INVALID_CREDENTIALS", "TOO_MANY_ATTEMPTS", "PASSWORD_HASHING_BUSY"}
    # The right password from the attacker's address waits; from the fan's own, it works.
    assert await _sign_in(stubs, fan.email, fan.password, ATTACKER) == "TOO_MANY_ATTEMPTS"
    assert await _sign_in(stubs, fan.email, fan.password, FAN) is None


async def test_x_forwarded_for_counts_only_behind_a_trusted_proxy() -> None:
    trusted = parse_networks("10.0.0.0/8")
    forwarded = (("x-forwarded-for", f"{ATTACKER}, 10.1.2.3"),)
    # Through the trusted proxy: the first hop from the right that is not trusted.
    assert client_address("ipv4:10.9.9.9:4000", forwarded, trusted) == ATTACKER
    # From anywhere else the header is the caller's own claim: ignored.
    assert client_address(f"ipv4:{FAN}:4000", forwarded, trusted) == FAN
    assert client_address(f"ipv4:{FAN}:4000", forwarded, ()) == FAN
    assert client_address("ipv6:[::1]:4000", (), ()) == "::1"
    assert client_address("ipv4:10.9.9.9:1", (("x-forwarded-for", "junk"),), trusted) == (
        "10.9.9.9"
    )


async def test_the_budgets_are_per_pair_per_address_and_per_email(app: App) -> None:
    throttle = app.accounts.throttle
    now = app.ctx.clock.now()
    email = "fan@example.com"
    # A distributed attack: many addresses, a few guesses each, reach the email's budget.
    addresses = [f"192.0.2.{i}" for i in range(EMAIL_LIMIT // PAIR_LIMIT)]
    for address in addresses:
        for _ in range(PAIR_LIMIT):
            assert not isinstance(await throttle.reserve(email, address, now), float)
        # The pair's budget is spent before the address's.
        assert isinstance(await throttle.reserve(email, address, now), float)
    assert isinstance(await throttle.reserve(email, FAN, now), float)
    # Another email is untouched; the window passes and the email has room again.
    assert not isinstance(await throttle.reserve("other@example.com", FAN, now), float)
    later = now + FAILURE_WINDOW + timedelta(seconds=1)
    assert not isinstance(await throttle.reserve(email, FAN, later), float)


async def test_an_address_spraying_emails_is_stopped_by_its_own_budget(app: App) -> None:
    throttle = app.accounts.throttle
    now = app.ctx.clock.now()
    results = [
        await throttle.reserve(f"fan-{i}@example.com", ATTACKER, now + timedelta(seconds=i))
        for i in range(ADDRESS_LIMIT + 1)
    ]
    assert [isinstance(r, float) for r in results] == [False] * ADDRESS_LIMIT + [True]
    # It waits until its oldest attempt in the window leaves it.
    wait = results[-1]
    assert isinstance(wait, float)
    assert wait == pytest.approx(
        (FAILURE_WINDOW - timedelta(seconds=ADDRESS_LIMIT)).total_seconds()
    )


async def test_a_proven_sign_in_is_not_stopped_by_a_spent_email_budget(app: App) -> None:
    throttle = app.accounts.throttle
    now = app.ctx.clock.now()
    email = "fan@example.com"
    for i in range(EMAIL_LIMIT // PAIR_LIMIT):
        for _ in range(PAIR_LIMIT):
            assert not isinstance(await throttle.reserve(email, f"192.0.2.{i}", now), float)
    assert isinstance(await throttle.reserve(email, FAN, now), float)  # the email's budget is spent
    # Showing a past session of the account: only the fan's own budgets count...
    for _ in range(PAIR_LIMIT):
        reservation = await throttle.reserve(email, FAN, now, proven=True)
        assert not isinstance(reservation, float)
        assert not reservation.email_counted
    # ...so a stolen old session still gets only PAIR_LIMIT guesses from one address.
    assert isinstance(await throttle.reserve(email, FAN, now, proven=True), float)


async def test_an_ipv6_host_is_budgeted_by_its_slash_64(app: App) -> None:
    throttle = app.accounts.throttle
    now = app.ctx.clock.now()
    same_host = [f"2001:db8:1:2::{i:x}" for i in range(1, PAIR_LIMIT + 2)]
    results = [await throttle.reserve("fan@example.com", a, now) for a in same_host]
    assert [isinstance(r, float) for r in results] == [False] * PAIR_LIMIT + [True]
    # Another /64 has its own budget; an IPv4 address (plain or mapped) is its own key.
    assert not isinstance(await throttle.reserve("fan@example.com", "2001:db8:1:3::1", now), float)
    assert budget_address("::ffff:192.0.2.1") == budget_address("192.0.2.1") == "192.0.2.1"
    assert budget_address("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert budget_address("unix:/tmp/socket") == "unix:/tmp/socket"


async def test_concurrent_reservations_over_many_connections_take_only_the_budget(
    app: App,
) -> None:
    """The count-then-add is one locked step in the database: 60 reservations racing
    over the pool's connections get exactly the pair's budget, and those refused
    leave no row."""
    now = app.ctx.clock.now()
    results = await asyncio.gather(
        *(app.accounts.throttle.reserve("fan@example.com", ATTACKER, now) for _ in range(60))
    )
    assert sum(not isinstance(r, float) for r in results) == PAIR_LIMIT
    assert await _stored_attempts(app) == PAIR_LIMIT


async def test_a_fan_showing_a_past_session_signs_in_while_a_botnet_spends_the_email_budget(
    app: App, stubs: Stubs
) -> None:
    fan = await new_fan(stubs)
    guesses = [
        _sign_in(stubs, fan.email, f"wrong {i}", f"192.0.2.{i // PAIR_LIMIT + 1}")
        for i in range(EMAIL_LIMIT)
    ]
    results = []
    for start in range(0, len(guesses), 4):  # a few at a time: the hashing line is short
        results += await asyncio.gather(*guesses[start : start + 4])
    assert results.count("INVALID_CREDENTIALS") == EMAIL_LIMIT
    # The email's budget is spent: the right password alone, from the fan's address, waits.
    assert await _sign_in(stubs, fan.email, fan.password, FAN) == "TOO_MANY_ATTEMPTS"
    # With the session of an earlier sign-in (expired or not), the fan gets in.
    reply = await stubs.account.SignIn(
        account_pb2.SignInRequest(
            email=fan.email, password=fan.password, previous_session_token=fan.session_token
        ),
        metadata=_from(FAN),
    )
    assert reply.session_token
    # Someone else's past session proves nothing for this email.
    other = await new_fan(stubs)
    try:
        await stubs.account.SignIn(
            account_pb2.SignInRequest(
                email=fan.email, password=fan.password, previous_session_token=other.session_token
            ),
            metadata=_from("198.51.100.99"),
        )
    except grpc.aio.AioRpcError as err:
        assert error_details(err).reason == "TOO_MANY_ATTEMPTS"
    else:
        raise AssertionError("another account's session got past the email's budget")


async def test_the_budgets_hold_across_server_processes(
    app: App, stubs: Stubs, settings: Settings, clock: FakeClock, database_url: str
) -> None:
    """A burst spread over two servers on one database (two replicas behind a
    balancer) evaluates the pair's budget once in all, not once per server: the
    budgets were per process, so each replica gave a guesser a budget of its own."""
    fan = await new_fan(stubs)
    other = await build_app(settings, database_url=database_url, clock=clock, start_jobs=False)
    await other.start()
    hashes = _HashCount(app, other)
    try:
        async with grpc.aio.insecure_channel(other.address) as channel:
            replica = Stubs.on(channel)
            guesses = await asyncio.gather(
                *(
                    _sign_in(s, fan.email, f"wrong password {i}", ATTACKER)
                    for i in range(30)
                    for s in (stubs, replica)
                )
            )
            assert hashes.count == PAIR_LIMIT
            assert guesses.count("INVALID_CREDENTIALS") == PAIR_LIMIT
            # Either replica refuses the attacker's address now, and lets the fan's in.
            for door in (stubs, replica):
                assert await _sign_in(door, fan.email, fan.password, ATTACKER) == (
                    "TOO_MANY_ATTEMPTS"
                )
            assert await _sign_in(replica, fan.email, fan.password, FAN) is None
    finally:
        await other.stop(grace=0.5)


async def test_a_success_clears_the_pairs_failures_and_the_job_prunes_the_window(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fan = await new_fan(stubs)
    for i in range(PAIR_LIMIT - 1):  # a fan's typos
        assert await _sign_in(stubs, fan.email, f"typo {i}", FAN) == "INVALID_CREDENTIALS"
    assert await _sign_in(stubs, fan.email, fan.password, FAN) is None
    await app.accounts.throttle.settled()  # cleared right after the answer
    # The typos no longer count: a full budget of tries again.
    for i in range(PAIR_LIMIT):
        assert await _sign_in(stubs, fan.email, f"again {i}", FAN) == "INVALID_CREDENTIALS"
    assert await _sign_in(stubs, fan.email, fan.password, FAN) == "TOO_MANY_ATTEMPTS"
    # An attempt from another address, a minute later.
    clock.advance(60)
    assert await _sign_in(stubs, fan.email, "from elsewhere", ATTACKER) == "INVALID_CREDENTIALS"

    # The job keeps what is inside the window...
    assert (await app.ctx.jobs.run_now(PRUNE_JOB)).result == 0
    assert await _stored_attempts(app) == PAIR_LIMIT + 1
    # ...and deletes what has left it: the fan's failures, not yet the attacker's.
    clock.advance((FAILURE_WINDOW - timedelta(seconds=30)).total_seconds())
    assert (await app.ctx.jobs.run_now(PRUNE_JOB)).result == PAIR_LIMIT
    assert await _stored_attempts(app) == 1
    assert await _sign_in(stubs, fan.email, fan.password, FAN) is None


async def test_a_success_answers_before_its_attempts_are_cleared(
    app: App, stubs: Stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fan's SignIn does not wait for its success's DELETE: it answers while
    the DELETE is held back, the attempts count until it commits, then they are gone."""
    fan = await new_fan(stubs)
    for i in range(PAIR_LIMIT - 1):
        assert await _sign_in(stubs, fan.email, f"typo {i}", FAN) == "INVALID_CREDENTIALS"
    throttle = app.accounts.throttle
    release = asyncio.Event()
    succeeded = throttle.succeeded

    async def held_back(reservation: Any) -> None:
        await release.wait()
        await succeeded(reservation)

    monkeypatch.setattr(throttle, "succeeded", held_back)
    try:
        assert await _sign_in(stubs, fan.email, fan.password, FAN) is None
        assert await _stored_attempts(app) == PAIR_LIMIT  # the typos and the success
    finally:
        release.set()
    await throttle.settled()
    assert await _stored_attempts(app) == 0


async def test_beyond_the_bounded_waiting_line_hashing_is_refused_at_once() -> None:
    hasher = PasswordHasher(cost=14, workers=1, waiting=2)
    stored = hash_password_blocking("a password", 10)
    try:
        results = await asyncio.gather(
            *(hasher.verify("a password", stored) for _ in range(3)),
            *(hasher.verify("a password", stored) for _ in range(5)),
            return_exceptions=True,
        )
    finally:
        hasher.close()
    busy = [r for r in results if isinstance(r, HashingBusy)]
    assert results[:3] == [True, True, True]
    assert len(busy) == 5
    assert busy[0].retry_after_seconds == 1.0
    assert hasher.open.in_flight == 0


async def test_sign_in_answers_resource_exhausted_when_the_hasher_is_full(
    app: App, stubs: Stubs
) -> None:
    app.accounts.hasher.open.places = 0  # every thread and place taken
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.account.SignIn(
                account_pb2.SignInRequest(email="a@example.com", password="whatever pw"),
                metadata=_from(FAN),
            )
    finally:
        app.accounts.hasher.open.places = 10
    details = error_details(err.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "PASSWORD_HASHING_BUSY",
    )
    assert details.retry is not None
    # Not evaluated, so not counted: the budget is whole.
    assert not isinstance(
        await app.accounts.throttle.reserve("a@example.com", FAN, app.ctx.clock.now()), float
    )


async def test_sign_up_and_password_issue_token_are_refused_at_once_beyond_the_line(
    app: App, stubs: Stubs
) -> None:
    """Concurrent SignUps and password IssueTokens fill the open lane's places (its
    hashes held back until released): every call beyond them is refused at once,
    RESOURCE_EXHAUSTED PASSWORD_HASHING_BUSY with RetryInfo, and writes nothing;
    the calls holding a place then complete."""
    fan = await new_fan(stubs)
    lane = app.accounts.hasher.open
    extra = 6
    with hashes_held_back(lane):
        emails = [f"line-{i}-{fan.email}" for i in range(lane.places + extra)]
        sign_ups = [
            asyncio.ensure_future(
                stubs.account.SignUp(
                    account_pb2.SignUpRequest(email=email, password="a fine password"),
                    metadata=_from(FAN),
                )
            )
            for email in emails
        ]
        issues = [
            asyncio.ensure_future(
                stubs.queue.IssueToken(
                    queue_pb2.IssueTokenRequest(
                        password=queue_pb2.PasswordCredential(
                            email=fan.email, password=fan.password
                        )
                    ),
                    metadata=_from(FAN),
                )
            )
            for _ in range(extra)
        ]
        calls = sign_ups + issues
        done, _ = await asyncio.wait(calls, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        while len(done) < 2 * extra:  # the refused ones answer without waiting
            more, _ = await asyncio.wait(
                [c for c in calls if not c.done()], timeout=30, return_when=asyncio.FIRST_COMPLETED
            )
            assert more, "calls beyond the line were not refused at once"
            done |= more
        assert lane.in_flight == lane.places  # the line is full...
        refused = [c.exception() for c in done]
        for error in refused:  # ...and everything beyond it was told to come back
            assert isinstance(error, grpc.aio.AioRpcError), error
            details = error_details(error)
            assert (details.code, details.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "PASSWORD_HASHING_BUSY",
            )
            assert details.retry is not None
        assert any(c in done for c in issues), "password IssueToken was never refused"
    results = await asyncio.gather(*calls, return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(answered) == lane.places  # those that held a place completed
    created = sum(1 for r in results[: len(sign_ups)] if not isinstance(r, BaseException))
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM users WHERE email LIKE %s", (f"line-%-{fan.email}",)
        )
        assert await cursor.fetchone() == (created,)


def test_the_hashing_pool_follows_the_cpu_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(__import__("os").sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_the_quota_is_read_from_this_process_cgroup_and_those_above_it(tmp_path: Path) -> None:
    """Without a cgroup namespace (a host, or a container sharing the host's), the
    process's cgroup is a path below the mount; a limit on any level above binds."""
    membership = tmp_path / "membership"
    membership.write_text("0::/kubepods/pod1/ctr\n")
    pod = tmp_path / "kubepods" / "pod1"
    (pod / "ctr").mkdir(parents=True)
    (tmp_path / "kubepods" / "cpu.max").write_text("400000 100000\n")
    (pod / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, membership) == 4.0  # the node's allocatable
    (pod / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_quota(tmp_path, membership) == 0.5  # the pod's own, tighter
    # cgroup v1: the cpu controller's hierarchy, named on its own line.
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    membership.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_quota(v1, membership) == 1.5
    membership.write_text("garbage\n")  # unreadable membership: the mount's root only
    assert cgroup_cpu_quota(v1, membership) is None


def test_server_processes_on_one_machine_share_its_cpus(tmp_path: Path) -> None:
    """CONCERT_WORKERS=N: each process hashes with its share of the CPUs, at least one."""
    (tmp_path / "cpu.max").write_text("400000 100000\n")  # 4 CPUs' worth
    cpus = available_cpus(tmp_path)
    assert cpus_per_process(1, tmp_path) == cpus
    assert cpus_per_process(2, tmp_path) == max(1, cpus // 2)
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert cpus_per_process(4, tmp_path) == 1


async def test_the_apps_hasher_and_refusal_pacing_take_their_processes_share(
    database_url: str, settings: Settings
) -> None:
    application = await build_app(
        settings.replace(workers=2), database_url=database_url, start_jobs=False
    )
    try:
        assert application.accounts.hasher.workers == cpus_per_process(2)
        # And its share of the refusals answered at once (the rate is the machine's).
        assert application.accounts.pacing.at_once_per_second == (
            settings.password_refusals_at_once_per_second // 2
        )
    finally:
        await application.stop(grace=0.1)


async def test_a_proven_caller_has_a_lane_of_its_own() -> None:
    """The open lane is full of junk: a caller with a past sign-in still gets a
    place, and a thread at once, while every junk call waits its turn."""
    hasher = PasswordHasher(cost=14, workers=1, waiting=3)
    stored = hash_password_blocking("a password", 10)
    dear = hash_password_blocking("a password", 14)  # each junk hash takes a while
    finished: list[str] = []

    async def junk(i: int) -> None:
        with hasher.place() as lane:
            await hasher.verify_in_place(lane, "junk", dear)
        finished.append(f"junk-{i}")

    async def proven() -> None:
        with hasher.place(proven=True) as lane:
            assert lane is hasher.proven
            assert await hasher.verify_in_place(lane, "a password", stored)
        finished.append("proven")

    try:
        floods = [asyncio.ensure_future(junk(i)) for i in range(hasher.open.places)]
        await asyncio.sleep(0)  # every junk call holds its place; one thread runs
        with pytest.raises(HashingBusy):
            with hasher.place():
                pass
        await asyncio.gather(proven(), *floods)
    finally:
        hasher.close()
    # One junk call had the open lane's thread; the proven one did not wait for it.
    assert finished.index("proven") <= 1, finished


async def test_a_proven_caller_takes_the_open_lane_when_its_own_is_full() -> None:
    hasher = PasswordHasher(cost=10, workers=1, waiting=1)
    try:
        with contextlib.ExitStack() as places:
            for _ in range(hasher.proven.places):
                assert places.enter_context(hasher.place(proven=True)) is hasher.proven
            assert places.enter_context(hasher.place(proven=True)) is hasher.open
            assert places.enter_context(hasher.place(proven=True)) is hasher.open
            with pytest.raises(HashingBusy):
                places.enter_context(hasher.place(proven=True))
        assert (hasher.open.in_flight, hasher.proven.in_flight) == (0, 0)
    finally:
        hasher.close()


async def test_the_open_lane_hashes_in_niced_processes_of_their_own_sessions() -> None:
    """The open lane's workers are processes that lead sessions (so autogroups)
    of their own, niced; the proven lane's threads run at the server's priority."""
    hasher = PasswordHasher(cost=10, workers=1)
    try:
        worker = await hasher.open.run(os.getpid)
        session = await hasher.open.run(os.getsid, 0)
        open_nice = await hasher.open.run(os.getpriority, os.PRIO_PROCESS, 0)
        proven_nice = await hasher.proven.run(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        )
    finally:
        hasher.close()
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert worker != os.getpid() and session == worker
    assert open_nice == min(19, own + OPEN_LANE_NICENESS)
    assert proven_nice == own


async def test_a_worker_killed_mid_hash_costs_the_call_nothing() -> None:
    """A worker process dies (out of memory, killed) while it hashes: the pool
    is replaced and the hash runs again on a new worker; later calls are served."""
    hasher = PasswordHasher(cost=10, workers=1)
    stored = hash_password_blocking("a password", 10)
    slow = hash_password_blocking("a password", 17)  # long enough to be killed in
    try:
        worker = await hasher.open.run(os.getpid)
        hashing = asyncio.ensure_future(hasher.verify("a password", slow))
        await asyncio.sleep(0.1)
        assert not hashing.done()
        os.kill(worker, signal.SIGKILL)
        assert await hashing is True
        replacement = await hasher.open.run(os.getpid)
        assert replacement != worker
        assert await hasher.verify("a password", stored) is True
        assert await hasher.verify("another", stored) is False
    finally:
        hasher.close()
    assert hasher.open.in_flight == 0


async def test_workers_that_keep_dying_make_the_call_busy_not_internal() -> None:
    """The replacement worker dies too: the call is refused PASSWORD_HASHING_BUSY
    (retry shortly), never an unexpected error; the next call gets new workers."""
    hasher = PasswordHasher(cost=10, workers=1)
    stored = hash_password_blocking("a password", 10)
    slow = hash_password_blocking("a password", 17)
    try:
        first = await hasher.open.run(os.getpid)
        hashing = asyncio.ensure_future(hasher.verify("a password", slow))
        await asyncio.sleep(0.1)
        os.kill(first, signal.SIGKILL)
        replacement = await _new_worker(besides={first})
        await asyncio.sleep(0.1)  # it is hashing the call again
        os.kill(replacement, signal.SIGKILL)
        with pytest.raises(HashingBusy):
            await hashing
        assert await hasher.verify("a password", stored) is True
    finally:
        hasher.close()


async def _new_worker(besides: set[int]) -> int:
    """A worker process of this test's hasher other than `besides`: workers lead
    sessions of their own, which the fork server and resource tracker do not."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if child.pid not in besides and os.getsid(child.pid) == child.pid:
                    return child.pid
        await asyncio.sleep(0.01)
    raise AssertionError("no new worker started")


async def test_a_full_open_lane_refuses_before_any_database_work_and_keeps_proven_fans_in(
    app: App, stubs: Stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A junk storm fills the open lane: a further junk sign-in is refused without
    a database lookup (it holds no connection), a fan showing their own earlier
    session is still hashed, and a session of another account proves nothing."""
    fan, other = await new_fan(stubs), await new_fan(stubs)
    lookups = 0
    find_credentials = accounts_store.find_credentials

    async def counting_lookup(conn: Any, email: str) -> Any:
        nonlocal lookups
        lookups += 1
        return await find_credentials(conn, email)

    monkeypatch.setattr(accounts_store, "find_credentials", counting_lookup)
    app.accounts.hasher.open.places = 0  # the storm holds every open place

    def sign_in(email: str, password: str, previous: str = "") -> Awaitable[str | None]:
        request = account_pb2.SignInRequest(
            email=email, password=password, previous_session_token=previous
        )

        async def call() -> str | None:
            try:
                await stubs.account.SignIn(request, metadata=_from(FAN))
            except grpc.aio.AioRpcError as err:
                return error_details(err).reason
            return None

        return call()

    assert await sign_in("junk@example.com", "not it at all") == "PASSWORD_HASHING_BUSY"
    assert lookups == 0
    assert await sign_in(fan.email, fan.password, fan.session_token) is None
    # Another account's session: looked up, found not to be this account's, and
    # sent to the open lane, which is full.
    assert await sign_in(fan.email, fan.password, other.session_token) == "PASSWORD_HASHING_BUSY"
    assert lookups == 2
    assert app.accounts.hasher.proven.in_flight == 0


async def test_the_open_lane_starts_no_hash_while_the_proven_lane_hashes() -> None:
    hasher = PasswordHasher(cost=10, workers=1)
    release, proven_started = threading.Event(), threading.Event()

    def proven_hash() -> None:
        proven_started.set()
        release.wait(timeout=10)

    try:
        await hasher.open.run(os.getpid)  # its worker is started and idle
        proven = asyncio.ensure_future(hasher.proven.run(proven_hash))
        await asyncio.to_thread(proven_started.wait, 10)
        junk = asyncio.ensure_future(hasher.open.run(os.getpid))
        await asyncio.sleep(0.2)  # the open lane's worker is free: only the gate holds it
        assert not junk.done()
        release.set()
        await asyncio.gather(proven, junk)
        assert junk.result() != os.getpid()
    finally:
        release.set()
        hasher.close()


async def test_the_open_lanes_workers_are_stopped_while_the_proven_lane_hashes() -> None:
    """A junk hash already running in the open lane stops where it is when a
    proven hash starts, and finishes, right, once the proven lane is idle."""
    hasher = PasswordHasher(cost=10, workers=1)
    try:
        await a_junk_hash_stops_while_a_proven_one_runs(hasher, hasher)
    finally:
        hasher.close()


@pytest.mark.parametrize("stopped", [False, True], ids=["hashing", "stopped"])
def test_the_open_lanes_workers_end_with_a_killed_server(tmp_path: Path, stopped: bool) -> None:
    """SIGKILL gives the server no chance to stop its workers, or to continue
    those it stopped: multiprocessing's fork server sees it go and exits, and
    the kernel kills its workers with it, stopped or not."""
    script = tmp_path / "hashing_server.py"
    script.write_text(
        "import asyncio, os, sys, time\n"
        "from server.accounts.passwords import PasswordHasher\n"
        "async def main():\n"
        "    hasher = PasswordHasher(cost=10, workers=1)\n"
        "    print(await hasher.open.run(os.getpid), flush=True)\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    server = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        assert _running(worker)
        helpers = [child.pid for child in psutil.Process(server.pid).children(recursive=True)]
        assert worker in helpers and len(helpers) >= 2  # the fork server too
        if stopped:
            os.kill(worker, signal.SIGSTOP)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in helpers if _running(pid)]


def _running(pid: int) -> bool:
    """True while pid is a process that has not exited (a zombie has)."""
    return process_state(pid) not in ("", "Z")
