"""Faults, bounded and on loopback: stuck locks, abandoned calls, a database
that goes away and comes back, a server killed with SIGKILL mid-workload.
After each, the invariants hold with no manual repair."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tests.clusters
from concert.v1 import account_pb2, payment_pb2, queue_pb2, reservation_pb2, wallet_pb2
from server.app import App, build_app
from server.clock import FakeClock
from server.config import Settings
from server.db.embedded import EmbeddedCluster
from server.db.migrate import migrate
from server.invariants import check_database
from tests.conftest import empty_tables
from tests.fans import AdmittedFan, admitted_fan
from tests.reliability.helpers import PRICE, assert_invariants, concert_request
from tests.support import ADMIN, TEST_ADMIN_KEY, Stubs, error_details, free_port


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A stuck lock fails a call after 300 ms instead of 2 s.
    return settings.replace(password_hash_cost=10, lock_timeout_ms=300)


async def _concert_and_fan(app: App, stubs: Stubs) -> tuple[str, AdmittedFan]:
    concert = await stubs.admin.CreateConcert(concert_request(app, seats=5), metadata=ADMIN)
    return concert.dates[0].date_id, await admitted_fan(stubs)


async def _scalar(url: str, query: str, *params: object) -> object:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
        assert row is not None
        return row[0]


async def test_a_stuck_row_lock_fails_the_call_with_database_timeout(
    app: App, stubs: Stubs, database_url: str
) -> None:
    date_id, fan = await _concert_and_fan(app, stubs)
    async with await psycopg.AsyncConnection.connect(database_url) as stuck:
        await stuck.execute(
            "SELECT 1 FROM seats WHERE date_id = %s AND seat_number = 1 FOR UPDATE", (date_id,)
        )
        # The bound: a 30 s deadline the call must answer well within (it
        # would hang until the lock is released without lock_timeout).
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.reservation.ReserveSeat(
                reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1),
                metadata=fan.metadata,
                timeout=30,
            )
        details = error_details(err.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_TIMEOUT",
        )
        assert details.retry is not None
        await stuck.rollback()
    # Released: the same call goes through, and nothing half-done was left.
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1), metadata=fan.metadata
    )
    assert held.reservation.seat_number == 1
    await assert_invariants(app)


@contextlib.asynccontextmanager
async def _patient_server(
    database_url: str, settings: Settings
) -> AsyncIterator[tuple[App, Stubs]]:
    """A server whose lock_timeout (20 s) is far above a client's patience: the
    CLIENT gives up first, while the server's transaction waits on a row lock."""
    await empty_tables(database_url)
    app = await build_app(
        settings.replace(lock_timeout_ms=20_000),
        database_url=database_url,
        clock=FakeClock(datetime.now(UTC).replace(microsecond=0)),
        start_jobs=False,
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield app, Stubs.on(channel)
    finally:
        await app.stop(grace=0.5)


PATIENCE = 0.3  # seconds a client waits before it gives up


async def _abandon_while_locked(
    database_url: str,
    lock: str,
    params: tuple[object, ...],
    make_call: Callable[[float | None], Any],
    give_up: str,
) -> None:
    """Another session holds the row lock `lock` takes while the client gives up
    on make_call(timeout), by deadline or by cancelling; the lock is held a while
    longer (had the server kept waiting, its write would go through on release),
    then released. Afterwards the server holds no transaction open."""
    async with await psycopg.AsyncConnection.connect(database_url) as stuck:
        await stuck.execute(lock, params)
        call = make_call(PATIENCE if give_up == "deadline" else None)
        if give_up == "cancel":
            await asyncio.sleep(PATIENCE)
            call.cancel()
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await call
        await asyncio.sleep(0.5)
        await stuck.rollback()
    await asyncio.sleep(0.5)
    idle_in_transaction = await _scalar(
        database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state LIKE 'idle in transaction%%'",
    )
    assert idle_in_transaction == 0


@pytest.mark.parametrize("give_up", ["deadline", "cancel"])
async def test_an_abandoned_call_rolls_its_transaction_back(
    database_url: str, settings: Settings, give_up: str
) -> None:
    async with _patient_server(database_url, settings) as (app, stubs):
        fan = await admitted_fan(stubs)
        request_id = str(uuid.uuid4())
        charge = wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=5000, request_id=request_id)
        await _abandon_while_locked(
            database_url,
            "SELECT 1 FROM wallets WHERE user_id = %s FOR UPDATE",
            (fan.user_id,),
            lambda timeout: stubs.wallet.Charge(charge, metadata=ADMIN, timeout=timeout),
            give_up,
        )
        for query, param, expected in [
            ("SELECT balance FROM wallets WHERE user_id = %s", fan.user_id, 0),
            ("SELECT count(*) FROM wallet_ledger WHERE user_id = %s", fan.user_id, 0),
            ("SELECT count(*) FROM idempotency_keys WHERE request_id = %s", request_id, 0),
        ]:
            assert await _scalar(database_url, query, param) == expected, query
        # The retry with the same request id then charges exactly once.
        reply = await stubs.wallet.Charge(charge, metadata=ADMIN)
        assert reply.balance == 5000
        await assert_invariants(app)


@pytest.mark.parametrize("give_up", ["deadline", "cancel"])
async def test_a_pay_abandoned_at_its_last_statement_rolls_everything_back(
    database_url: str, settings: Settings, give_up: str
) -> None:
    """Pay waits on the counters every payment shares, whose statement carries
    the COMMIT (UnitOfWork.send(..., commit=True)); the client gives up: no money moves."""
    async with _patient_server(database_url, settings) as (app, stubs):
        date_id, fan = await _concert_and_fan(app, stubs)
        await stubs.wallet.Charge(
            wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=PRICE), metadata=ADMIN
        )
        held = await stubs.reservation.ReserveSeat(
            reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1),
            metadata=fan.metadata,
        )
        pay = payment_pb2.PayRequest(reservation_id=held.reservation.reservation_id)
        await _abandon_while_locked(
            database_url,
            "SELECT 1 FROM concert_dates WHERE id = %s FOR UPDATE",
            (date_id,),
            lambda timeout: stubs.payment.Pay(pay, metadata=fan.metadata, timeout=timeout),
            give_up,
        )
        for query, expected in [
            ("SELECT balance FROM wallets WHERE user_id = %s", PRICE),
            ("SELECT count(*) FROM payments WHERE user_id = %s", 0),
            ("SELECT count(*) FROM wallet_ledger WHERE user_id = %s", 1),
            ("SELECT state FROM reservations WHERE user_id = %s", "held"),
            ("SELECT state FROM queue_tokens WHERE user_id = %s", "live"),
        ]:
            assert await _scalar(database_url, query, fan.user_id) == expected, query
        # Released: the same Pay now goes through, once.
        reply = await stubs.payment.Pay(pay, metadata=fan.metadata)
        assert reply.payment.amount == PRICE
        await assert_invariants(app)


# -- PostgreSQL stops and starts under the server ---------------------------


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    with tests.clusters.own_cluster() as cluster:
        yield cluster


async def _health(target: str) -> int | None:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError:
            return None
    return int(reply.status)


async def _until(predicate: object, *, attempts: int = 120, pause: float = 0.25) -> None:
    for _ in range(attempts):
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(pause)
    raise AssertionError("condition not reached within the bound")


async def test_database_restart_unavailable_meanwhile_then_recovers_with_nothing_lost(
    own_cluster: EmbeddedCluster, settings: Settings
) -> None:
    url = own_cluster.url
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    app = await build_app(settings, database_url=url, clock=clock, start_jobs=False)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs.on(channel)
            date_id, fan = await _concert_and_fan(app, stubs)
            await stubs.wallet.Charge(
                wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=2 * PRICE), metadata=ADMIN
            )
            held = await stubs.reservation.ReserveSeat(
                reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1),
                metadata=fan.metadata,
            )
            SERVING = health_pb2.HealthCheckResponse.SERVING
            NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
            assert await _health(app.address) == SERVING

            own_cluster.pg_ctl("-w", "stop", "-m", "immediate")
            # Meanwhile: calls that need the database answer UNAVAILABLE (never
            # hang, never INTERNAL), and health turns NOT_SERVING.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stubs.wallet.GetBalance(
                    wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=ADMIN, timeout=30
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stubs.account.SignUp(
                    account_pb2.SignUpRequest(email="down@example.com", password="long enough pw"),
                    timeout=30,
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            async def not_serving() -> bool:
                return await _health(app.address) == NOT_SERVING

            await _until(not_serving)

            own_cluster.start()

            async def recovered() -> bool:
                if await _health(app.address) != SERVING:
                    return False
                try:
                    await stubs.wallet.GetBalance(
                        wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=ADMIN, timeout=5
                    )
                except grpc.aio.AioRpcError:
                    return False
                return True

            await _until(recovered)
            # Nothing committed was lost: the charge, the hold; and work goes on.
            balance = await stubs.wallet.GetBalance(
                wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=ADMIN
            )
            assert balance.balance == 2 * PRICE
            paid = await stubs.payment.Pay(
                payment_pb2.PayRequest(reservation_id=held.reservation.reservation_id),
                metadata=fan.metadata,
            )
            assert paid.payment.amount == PRICE
            await assert_invariants(app)
    finally:
        await app.stop(grace=0.5)


# -- kill -9 during a mixed workload -----------------------------------------

KILLS = 3


async def _mixed_workload(target: str, date_id: str, fans: list[AdmittedFan], seed: int) -> int:
    """Fans hold, pay, cancel and charge at random until the server dies; calls made."""
    rng = random.Random(seed)
    made = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stubs = Stubs.on(channel)

        async def one_fan(fan: AdmittedFan) -> None:
            nonlocal made
            while True:
                try:
                    made += 1
                    if rng.random() < 0.25:
                        await stubs.wallet.Charge(
                            wallet_pb2.ChargeRequest(
                                user_id=fan.user_id, amount=rng.randint(1, 50_000)
                            ),
                            metadata=ADMIN,
                            timeout=5,
                        )
                        continue
                    held = await stubs.reservation.ReserveSeat(
                        reservation_pb2.ReserveSeatRequest(
                            date_id=date_id, seat_number=rng.randint(1, 40)
                        ),
                        metadata=fan.metadata,
                        timeout=5,
                    )
                    reservation_id = held.reservation.reservation_id
                    if rng.random() < 0.3:
                        await stubs.reservation.CancelReservation(
                            reservation_pb2.CancelReservationRequest(reservation_id=reservation_id),
                            metadata=fan.metadata,
                            timeout=5,
                        )
                    else:
                        await stubs.payment.Pay(
                            payment_pb2.PayRequest(
                                reservation_id=reservation_id, request_id=str(uuid.uuid4())
                            ),
                            metadata=fan.metadata,
                            timeout=5,
                        )
                except grpc.aio.AioRpcError as err:
                    if (
                        err.code() == grpc.StatusCode.UNAVAILABLE
                        and "connect" in (err.details() or "").lower()
                    ):
                        return  # the server is gone
                    if err.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                        raise
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one_fan(fan) for fan in fans))
    return made


@pytest.fixture
async def server_process_env(create_database: object) -> AsyncIterator[dict[str, str]]:
    url: str = create_database()  # type: ignore[operator]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCERT_")}
    env.update(
        CONCERT_DATABASE_URL=url,
        CONCERT_LISTEN=f"127.0.0.1:{port}",
        CONCERT_ADMIN_KEY=TEST_ADMIN_KEY,
        CONCERT_PASSWORD_HASH_COST="10",
        CONCERT_ADMISSION_CAPACITY="1000",
        CONCERT_SEED_DEMO="false",
        CONCERT_LOG_LEVEL="WARNING",
    )
    yield env


def _start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _serving(target: str) -> bool:
    return await _health(target) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
async def test_kill_9_at_random_moments_leaves_the_invariants_whole(
    server_process_env: dict[str, str],
) -> None:
    env = server_process_env
    target = env["CONCERT_LISTEN"]
    rng = random.Random(6)
    process = _start_server(env)
    try:
        await _until(lambda: _serving(target), attempts=240)
        async with grpc.aio.insecure_channel(target) as channel:
            stubs = Stubs.on(channel)
            start = datetime.now(UTC) + timedelta(days=7)
            request = concert_request_at(start)
            concert = await stubs.admin.CreateConcert(request, metadata=ADMIN)
            date_id = concert.dates[0].date_id
            fans = [await admitted_fan(stubs) for _ in range(12)]
        calls = 0
        for kill in range(KILLS):
            workload = asyncio.ensure_future(_mixed_workload(target, date_id, fans, seed=kill))
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            calls += await asyncio.wait_for(workload, timeout=60)
            process = _start_server(env)
            await _until(lambda: _serving(target), attempts=240)
            # Fans whose token was used up by a payment take a new one.
            async with grpc.aio.insecure_channel(target) as channel:
                stubs = Stubs.on(channel)
                for fan in fans:
                    issued = await stubs.queue.IssueToken(
                        queue_pb2.IssueTokenRequest(session_token=fan.session_token)
                    )
                    fan.token = issued.token
        assert calls > 50  # the workload really ran between the kills
        report = await check_database(
            env["CONCERT_DATABASE_URL"], datetime.now(UTC), expiry_grace=timedelta(seconds=60)
        )
        assert report.ok, "\n" + str(report)
        sold = await _scalar(env["CONCERT_DATABASE_URL"], "SELECT count(*) FROM seats WHERE sold")
        charged = await _scalar(env["CONCERT_DATABASE_URL"], "SELECT count(*) FROM wallet_ledger")
        assert int(sold) + int(charged) > 0  # type: ignore[call-overload]
    finally:
        process.kill()
        process.wait(timeout=30)


def concert_request_at(start: datetime) -> object:
    from google.protobuf.timestamp_pb2 import Timestamp

    from concert.v1 import admin_pb2

    when = Timestamp()
    when.FromDatetime(start)
    return admin_pb2.CreateConcertRequest(
        title="Kill Nine",
        venue="Loopback Hall",
        dates=[
            admin_pb2.ConcertDateSpec(
                start_time=when,
                seats=[admin_pb2.SeatSpec(seat_number=n, price=PRICE) for n in range(1, 41)],
            )
        ],
    )
