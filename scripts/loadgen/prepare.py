"""Data prepared in bulk before the measured window; none of it is measured.

Users and their wallets go straight into the bench database with COPY: one
password hash (made once by the server's own hashing code at the server's cost)
is shared by every user, and session credentials are minted with the server's
own session code and the database's signing secret, exactly as SignIn would
return them, so ten thousand signed-in fans cost no ten thousand password
hashes. Everything else (admission capacity, concerts and seats, wallet
balances, queue tokens, holds) goes through the public gRPC API with the
operator's key, so the bench depends on no table it does not own beyond
users/wallets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from server.accounts.kdf import hash_password_blocking
from server.accounts.sessions import issue_session
from server.clock import SystemClock
from server.signing import Signer, load_signing_keys

PASSWORD = "bench password 1234"
SESSION_TTL_SECONDS = 86400
# Calls in flight while preparing: enough to be quick, few enough to stay polite.
PREPARE_CONCURRENCY = 64
T = TypeVar("T")


@dataclass(frozen=True)
class Fan:
    user_id: str
    email: str
    session: str


@dataclass(frozen=True)
class AdmittedFan:
    fan: Fan
    token: str


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def measure_hash_seconds(cost: int, samples: int = 9) -> float:
    """The fastest of `samples` password hashes at this cost, on this machine, now.

    The fastest, not the median: anything else running can only slow a hash
    down, and the fastest gives the highest KDF limit, so the sign-in ratio
    judged against it is the strictest (the median once read 50.6 ms beside a
    server still settling after its start, against 36 ms otherwise).
    """
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        hash_password_blocking(PASSWORD, cost)
        timings.append(time.perf_counter() - started)
    return min(timings)


async def create_fans(database_url: str, count: int, label: str, hash_cost: int) -> list[Fan]:
    """`count` users with empty wallets, all with PASSWORD, each with a session credential."""
    password_hash = hash_password_blocking(PASSWORD, hash_cost)
    clock = SystemClock()
    now = clock.now()
    run = uuid.uuid4().hex[:6]
    users = [(uuid.uuid4(), f"{label}-{run}-{i}@bench.example") for i in range(count)]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.transaction():
            async with conn.cursor().copy(
                "COPY users (id, email, password_hash, created_at) FROM STDIN"
            ) as copy:
                for user_id, email in users:
                    await copy.write_row((user_id, email, password_hash, now))
            async with conn.cursor().copy(
                "COPY wallets (user_id, balance, updated_at) FROM STDIN"
            ) as copy:
                for user_id, _ in users:
                    await copy.write_row((user_id, 0, now))
        signer = Signer()
        signer.use(await load_signing_keys(conn, clock), now=clock.now())
    return [
        Fan(str(user_id), email, issue_session(signer, user_id, now, SESSION_TTL_SECONDS)[0])
        for user_id, email in users
    ]


async def bounded(items: Sequence[T], call: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """call(item) for every item, PREPARE_CONCURRENCY at a time, results in order."""
    limit = asyncio.Semaphore(PREPARE_CONCURRENCY)

    async def one(item: T) -> Any:
        async with limit:
            return await call(item)

    return await asyncio.gather(*(one(item) for item in items))


class Preparer:
    """Unmeasured gRPC calls that set the stage, with the operator's key."""

    def __init__(self, channel: grpc.aio.Channel, admin_key: str) -> None:
        self.admin_metadata = bearer(admin_key)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.queue = queue_pb2_grpc.QueueServiceStub(channel)
        self.reservation = reservation_pb2_grpc.ReservationServiceStub(channel)
        self.wallet = wallet_pb2_grpc.WalletServiceStub(channel)

    async def set_capacity(self, capacity: int) -> None:
        await self.admin.SetAdmission(
            admin_pb2.SetAdmissionRequest(capacity=capacity, paused=False),
            metadata=self.admin_metadata,
        )

    async def create_dates(self, seats: int, price: int) -> list[tuple[str, int]]:
        """A concert with enough dates to hold `seats` seats; [(date_id, seat count)]."""
        per_date = 10_000  # the most one date may have
        counts = [min(per_date, seats - start) for start in range(0, seats, per_date)]
        start = Timestamp()
        start.FromDatetime(datetime.now(UTC) + timedelta(days=30))
        reply = await self.admin.CreateConcert(
            admin_pb2.CreateConcertRequest(
                title="Bench concert",
                venue="Loopback Arena",
                dates=[
                    admin_pb2.ConcertDateSpec(
                        start_time=Timestamp(seconds=start.seconds + 86400 * i),
                        seats=[
                            admin_pb2.SeatSpec(seat_number=n, price=price)
                            for n in range(1, count + 1)
                        ],
                    )
                    for i, count in enumerate(counts)
                ],
                request_id=str(uuid.uuid4()),
            ),
            metadata=self.admin_metadata,
            timeout=120,
        )
        return [(d.date_id, d.total_seat_count) for d in reply.dates]

    async def fund(self, fans: Sequence[Fan], amount: int) -> None:
        async def charge(fan: Fan) -> None:
            await self.wallet.Charge(
                wallet_pb2.ChargeRequest(
                    user_id=fan.user_id, amount=amount, request_id=str(uuid.uuid4())
                ),
                metadata=self.admin_metadata,
                timeout=60,
            )

        await bounded(fans, charge)

    async def admit(self, fans: Sequence[Fan]) -> list[AdmittedFan]:
        """A queue token for each fan (admission capacity must already let them in)."""

        async def issue(fan: Fan) -> AdmittedFan:
            reply = await self.queue.IssueToken(
                queue_pb2.IssueTokenRequest(session_token=fan.session), timeout=60
            )
            if reply.status.state != queue_pb2.QUEUE_TOKEN_STATE_ADMITTED:
                raise RuntimeError(f"fan not admitted while preparing: {reply.status}")
            return AdmittedFan(fan, reply.token)

        return await bounded(fans, issue)

    async def hold(
        self, fans: Sequence[AdmittedFan], seats: Sequence[tuple[str, int]]
    ) -> list[str]:
        """Each fan holds the seat of the same index; the reservation ids."""

        async def reserve(pair: tuple[AdmittedFan, tuple[str, int]]) -> str:
            fan, (date_id, seat) = pair
            reply = await self.reservation.ReserveSeat(
                reservation_pb2.ReserveSeatRequest(
                    date_id=date_id, seat_number=seat, request_id=str(uuid.uuid4())
                ),
                metadata=bearer(fan.token),
                timeout=60,
            )
            return str(reply.reservation.reservation_id)

        return await bounded(list(zip(fans, seats, strict=True)), reserve)


def seat_list(dates: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(date_id, n) for date_id, count in dates for n in range(1, count + 1)]
