"""Three server processes, one PostgreSQL: a mixed workload spread over them.

What must hold with several replicas:
- the bank-style invariants (server.invariants) over the final state;
- each scheduled job runs in one process at a time: every run holds the job's
  advisory lock, and a sampler of pg_locks never sees two holders of one job;
  each process's /metrics shows which of them ran it;
- kill -9 of the process that ran the job last: another process runs it within
  about one interval (its held reservations still get expired);
- the List methods of the process given CONCERT_DATABASE_READ_URL read through
  that second pool (here a second connection string to the same server, not a
  streaming replica) and the answers agree with the other processes'.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import (
    account_pb2,
    account_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    concert_pb2,
    concert_pb2_grpc,
    payment_pb2,
    payment_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from server.db.locks import LockNamespace
from server.invariants import check_database
from tests.e2e.servers import ServerProcess, start_server
from tests.observability.scrape import Samples
from tests.support import ADMIN, bearer

INTERVAL_SECONDS = 1
HOLD_SECONDS = 2
FANS = 36
SEATS = 60  # more than the fans: seats stay free for the holds placed after the kill
PRICE = 1000
JOB = "hold-expiry"
PASSWORD = "correct horse battery"
T = TypeVar("T")


class Client:
    """Sync stubs on one server (the workload runs in threads)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.account = account_pb2_grpc.AccountServiceStub(self.channel)
        self.queue = queue_pb2_grpc.QueueServiceStub(self.channel)
        self.concert = concert_pb2_grpc.ConcertServiceStub(self.channel)
        self.reservation = reservation_pb2_grpc.ReservationServiceStub(self.channel)
        self.payment = payment_pb2_grpc.PaymentServiceStub(self.channel)
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)


def _second_connection_string(url: str) -> str:
    """The same database by another connection string (libpq key=value form)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["connect_timeout"] = "10"
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture(scope="module")
def database(create_database: Callable[[], str]) -> str:
    return create_database()


@pytest.fixture(scope="module")
def replicas(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    common = {
        "CONCERT_EXPIRY_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
        "CONCERT_HOLD_TTL_SECONDS": str(HOLD_SECONDS),
    }
    processes = [
        start_server(
            f"replica-{name}",
            database,
            Path(logs),
            with_metrics=True,
            extra_env=common
            | (
                {"CONCERT_DATABASE_READ_URL": _second_connection_string(database)}
                if name == "c"
                else {}
            ),
        )
        for name in ("a", "b", "c")
    ]
    try:
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            process.stop()


def scrape(process: ServerProcess) -> Samples:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(
        f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=10
    ) as r:
        text = r.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def job_runs(process: ServerProcess, outcome: str) -> float:
    return scrape(process).get(
        ("concert_job_runs_total", frozenset({("job_name", JOB), ("outcome", outcome)})), 0.0
    )


def last_run(process: ServerProcess) -> float:
    return scrape(process).get(
        ("concert_job_last_run_timestamp_seconds", frozenset({("job_name", JOB)})), 0.0
    )


class LockSampler(threading.Thread):
    """Polls pg_locks for the scheduled jobs' advisory locks, noting every holder."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.samples = 0
        self.held_samples = 0
        self.most_holders = 0  # of one job's lock at one instant

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.is_set():
                rows = conn.execute(
                    # pg_locks shows every database's locks: a test suite running
                    # at the same time on the same server holds the same job keys.
                    "SELECT objid, count(*) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND classid = %s AND objsubid = 2"
                    " AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                    " GROUP BY objid",
                    (int(LockNamespace.JOBS),),
                ).fetchall()
                self.samples += 1
                if rows:
                    self.held_samples += 1
                    self.most_holders = max(self.most_holders, *(count for _, count in rows))
                time.sleep(0.002)


def create_concert(client: Client) -> str:
    start = Timestamp()
    start.FromDatetime((datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0))
    reply = client.admin.CreateConcert(
        admin_pb2.CreateConcertRequest(
            title="Replicas",
            dates=[
                admin_pb2.ConcertDateSpec(
                    start_time=start,
                    seats=[
                        admin_pb2.SeatSpec(seat_number=n, price=PRICE) for n in range(1, SEATS + 1)
                    ],
                )
            ],
        ),
        metadata=ADMIN,
        timeout=30,
    )
    return str(reply.dates[0].date_id)


def _while_hashing_busy(call: Callable[[], T]) -> T:
    """A password call, retried as its RetryInfo asks while the hashing line is full
    (a dozen fans sign up at once on a small machine)."""
    for _ in range(30):
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                raise
            time.sleep(1.0)
    return call()


def fan_journey(clients: list[Client], i: int, date_id: str) -> str:
    """Sign-up, sign-in, token, charge, browse, hold; then pay, cancel or let it expire.

    Each step goes to the next replica. Returns what happened to the hold.
    """
    at = lambda step: clients[(i + step) % len(clients)]  # noqa: E731
    email = f"fan-{i}-{uuid.uuid4().hex[:8]}@example.com"
    user = _while_hashing_busy(
        lambda: at(0).account.SignUp(
            account_pb2.SignUpRequest(email=email, password=PASSWORD), timeout=30
        )
    )
    session = _while_hashing_busy(
        lambda: at(1).account.SignIn(
            account_pb2.SignInRequest(email=email, password=PASSWORD), timeout=30
        )
    )
    token = (
        at(2)
        .queue.IssueToken(
            queue_pb2.IssueTokenRequest(session_token=session.session_token), timeout=30
        )
        .token
    )
    at(3).wallet.Charge(
        wallet_pb2.ChargeRequest(user_id=user.user_id, amount=PRICE, request_id=str(uuid.uuid4())),
        metadata=bearer(session.session_token),
        timeout=30,
    )
    seats = (
        at(4)
        .concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(date_id=date_id),
            metadata=bearer(token),
            timeout=30,
        )
        .seats
    )
    rng = random.Random(i)
    for seat in rng.sample(list(seats), min(3, len(seats))):
        try:
            held = (
                at(5)
                .reservation.ReserveSeat(
                    reservation_pb2.ReserveSeatRequest(
                        date_id=date_id, seat_number=seat.seat_number
                    ),
                    metadata=bearer(token),
                    timeout=30,
                )
                .reservation
            )
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error
    else:
        return "no seat"
    if i % 3 == 0:
        try:
            at(6).payment.Pay(
                payment_pb2.PayRequest(
                    reservation_id=held.reservation_id, request_id=str(uuid.uuid4())
                ),
                metadata=bearer(token),
                timeout=30,
            )
            return "paid"
        except grpc.RpcError as error:  # the hold ran out first
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            return "expired before paying"
    if i % 3 == 1:
        at(6).reservation.CancelReservation(
            reservation_pb2.CancelReservationRequest(reservation_id=held.reservation_id),
            metadata=bearer(token),
            timeout=30,
        )
        return "cancelled"
    return "left to expire"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until the condition held; fails after timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def held_reservations(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM reservations WHERE state = 'held'").fetchone()
    return int(row[0]) if row else 0


def stale_holds(url: str) -> int:
    """Held reservations past their expiry by more than a second: the job's backlog."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM reservations WHERE state = 'held' AND expires_at < %s",
            (datetime.now(UTC) - timedelta(seconds=1),),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_three_replicas_share_one_database(
    replicas: list[ServerProcess], database: str
) -> None:
    clients = [Client(p.address) for p in replicas]
    date_id = create_concert(clients[0])
    sampler = LockSampler(database)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(lambda i: fan_journey(clients, i, date_id), range(FANS)))
        assert outcomes.count("paid") >= 1, outcomes
        assert outcomes.count("left to expire") >= 1, outcomes

        # The expiry job frees the holds left behind, from whichever process runs it.
        wait_until(
            lambda: stale_holds(database) == 0, 30, "the hold-expiry job expires stale holds"
        )
        # Until the holds left behind reach their expiry the condition above
        # holds trivially (a fast workload ends within one job interval): wait
        # for the job to have swept every one of them, so that it has run.
        wait_until(lambda: held_reservations(database) == 0, 30, "the job sweeps every hold")
    finally:
        sampler.stopping.set()
        sampler.join(10)

    # Each job's lock is never held by two sessions at once. (A run lasts a few
    # milliseconds: on a fast machine the 2 ms sampler may not catch one at all,
    # so seeing it held is reported below, not required.)
    assert sampler.most_holders <= 1
    ran = {p.name: job_runs(p, "ran") for p in replicas}
    skipped = {p.name: job_runs(p, "skipped") for p in replicas}
    print(
        f"outcomes {sorted(set(outcomes))}, runs per process {ran}, skipped {skipped},"
        f" job lock seen held in {sampler.held_samples} of {sampler.samples} samples"
    )
    assert sum(ran.values()) > 0, ran
    # Every process schedules the job and tries its lock. Which process wins each
    # interval is not ours to predict: processes started together fire in the same
    # order every second, so one of them may win every time (CI saw 0/0/3). That a
    # second process does run it when the first is gone is the takeover below.
    assert all(ran[name] + skipped[name] > 0 for name in ran), (ran, skipped)

    # The replica-reading process answered its lists through the second pool, and
    # every process lists the same free seats.
    read_requests = scrape(replicas[2]).get(
        ("concert_db_pool_requests_total", frozenset({("pool", "concert-read")})), 0.0
    )
    # (Not one read per list: pages are also served from memory, seat_list_cache.)
    assert read_requests >= 1, read_requests
    for process in replicas[:2]:
        assert (
            "concert_db_pool_requests_total",
            frozenset({("pool", "concert-read")}),
        ) not in scrape(process)
    token = _admitted_token(clients[0])
    # Each process may serve a page it built up to CONCERT_SEAT_LIST_MAX_AGE_MS
    # ago (1 s by default), before the last holds of the workload elsewhere.
    await asyncio.sleep(1.1)
    free = [
        [
            s.seat_number
            for s in c.concert.ListAvailableSeats(
                concert_pb2.ListAvailableSeatsRequest(date_id=date_id),
                metadata=bearer(token),
                timeout=30,
            ).seats
        ]
        for c in clients
    ]
    assert free[0] == free[1] == free[2]

    report = await check_database(database, datetime.now(UTC), expiry_grace=timedelta(seconds=5))
    assert report.ok, str(report)

    # kill -9 the process that ran the expiry job last: the others carry on.
    leader = max(replicas, key=last_run)
    survivors = [p for p in replicas if p is not leader]
    leader.kill()
    killed_at = time.time()
    survivor_clients = [Client(p.address) for p in survivors]
    # A hold placed after the kill must still be expired by the job.
    held_token = _admitted_token(survivor_clients[0])
    seat = (
        survivor_clients[0]
        .concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(date_id=date_id),
            metadata=bearer(held_token),
            timeout=30,
        )
        .seats[0]
    )
    survivor_clients[0].reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=seat.seat_number),
        metadata=bearer(held_token),
        timeout=30,
    )
    takeover = wait_until(
        lambda: any(last_run(p) > killed_at for p in survivors),
        10 * INTERVAL_SECONDS,
        "a surviving process runs the job after the kill",
    )
    print(f"job taken over {takeover:.2f}s after kill -9 of {leader.name}")
    # Within about one interval: bounded generously, the machine is shared.
    assert takeover <= 5 * INTERVAL_SECONDS
    wait_until(lambda: stale_holds(database) == 0, 30, "holds placed after the kill expire")
    report = await check_database(database, datetime.now(UTC), expiry_grace=timedelta(seconds=5))
    assert report.ok, str(report)
    for client in clients + survivor_clients:
        client.channel.close()


def _admitted_token(client: Client) -> str:
    email = f"checker-{uuid.uuid4().hex[:8]}@example.com"
    client.account.SignUp(account_pb2.SignUpRequest(email=email, password=PASSWORD), timeout=30)
    issued = client.queue.IssueToken(
        queue_pb2.IssueTokenRequest(
            password=queue_pb2.PasswordCredential(email=email, password=PASSWORD)
        ),
        timeout=30,
    )
    assert issued.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    return str(issued.token)
