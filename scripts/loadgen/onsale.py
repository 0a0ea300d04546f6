"""The on-sale day, played by a crowd of fans inside the load generator process.

Every fan signed in before the sale (a session credential) and, at the start,
takes a queue token (IssueToken with the session) at once. An admitted fan
lists the date's seats, picks one of the first page at random, tries to
reserve it (listing again after losing a race), and pays. A waiting fan
watches its position stream (WatchQueueStatus) until it is admitted. The
crowd stops when the load generator has seen every seat paid for, when every
fan is done, or at the phase's duration.

At most `concurrency` unary calls of each step are in flight at once (the
client's own limit, like a real front end's connection budget); waiting streams
do not count against it. A call's latency is measured once it is sent, so time spent
waiting for that budget is not charged to the server.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from tqdm import tqdm

from concert.v1 import (
    concert_pb2,
    concert_pb2_grpc,
    payment_pb2,
    payment_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    reservation_pb2,
    reservation_pb2_grpc,
)
from loadgen.client import CALL_TIMEOUT_SECONDS, Channels, Recorder

T = TypeVar("T")
STEPS = {
    "IssueToken": "/concert.v1.QueueService/IssueToken",
    "WatchQueueStatus": "/concert.v1.QueueService/WatchQueueStatus",
    "ListAvailableSeats": "/concert.v1.ConcertService/ListAvailableSeats",
    "ReserveSeat": "/concert.v1.ReservationService/ReserveSeat",
    "Pay": "/concert.v1.PaymentService/Pay",
}
# A fan who loses this many seat races in a row gives up (the seats are going).
MAX_RESERVE_ATTEMPTS = 20
LIST_PAGE_SIZE = 100


class _Crowd:
    def __init__(self, channels: Channels, phase: dict[str, Any], progress: tqdm) -> None:
        self.channels = channels
        self.date_id: str = phase["date_id"]
        self.seats: int = int(phase["seats"])
        # One budget per step: fans already admitted do not queue behind the
        # thousands still asking for a token (their calls would, in one FIFO).
        self.limits = {name: asyncio.Semaphore(int(phase["concurrency"])) for name in STEPS}
        self.progress = progress
        self.steps = {name: Recorder(f"on-sale {name}", method) for name, method in STEPS.items()}
        self.paid = 0
        self.sold_out = asyncio.Event()
        self.sold_out_at: float | None = None
        self.watch_messages = 0

    def bearer(self, token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    async def call(self, step: str, send: Callable[[], Awaitable[T]]) -> T | None:
        async with self.limits[step]:
            started = time.monotonic()
            try:
                reply = await send()
            except grpc.aio.AioRpcError as error:
                self.steps[step].record(
                    started, time.monotonic(), error.code().name, error.details() or ""
                )
                return None
            self.steps[step].record(started, time.monotonic(), "OK")
            return reply

    async def fan(self, index: int, session: str) -> None:
        try:
            await self._fan(index, session)
        finally:
            self.progress.update()

    async def _fan(self, index: int, session: str) -> None:
        channel = self.channels.channels[index % len(self.channels.channels)]
        queue = queue_pb2_grpc.QueueServiceStub(channel)
        issued = await self.call(
            "IssueToken",
            lambda: queue.IssueToken(
                queue_pb2.IssueTokenRequest(session_token=session), timeout=CALL_TIMEOUT_SECONDS
            ),
        )
        if issued is None:
            return
        token = issued.token
        if issued.status.state != queue_pb2.QUEUE_TOKEN_STATE_ADMITTED:
            token = await self.wait_for_admission(queue, token)
            if token is None:
                return
        await self.shop(channel, token)

    async def wait_for_admission(
        self, queue: queue_pb2_grpc.QueueServiceStub, token: str
    ) -> str | None:
        """The (re-signed) token once admitted; None if the token expired or the stream failed."""
        recorder = self.steps["WatchQueueStatus"]
        started = time.monotonic()
        stream = queue.WatchQueueStatus(
            queue_pb2.WatchQueueStatusRequest(), metadata=self.bearer(token)
        )
        admitted: str | None = None
        try:
            async for update in stream:
                self.watch_messages += 1
                token = update.token or token
                if update.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED:
                    admitted = token
                    break
                if update.status.state == queue_pb2.QUEUE_TOKEN_STATE_EXPIRED:
                    break
        except grpc.aio.AioRpcError as error:
            recorder.record(started, time.monotonic(), error.code().name, error.details() or "")
            return None
        finally:
            stream.cancel()
        # Latency of this "call" is the time spent waiting in line.
        recorder.record(started, time.monotonic(), "OK" if admitted else "EXPIRED")
        return admitted

    async def shop(self, channel: grpc.aio.Channel, token: str) -> None:
        metadata = self.bearer(token)
        concerts = concert_pb2_grpc.ConcertServiceStub(channel)
        reservations = reservation_pb2_grpc.ReservationServiceStub(channel)
        payments = payment_pb2_grpc.PaymentServiceStub(channel)
        for _ in range(MAX_RESERVE_ATTEMPTS):
            if self.sold_out.is_set():
                return
            listed = await self.call(
                "ListAvailableSeats",
                lambda: concerts.ListAvailableSeats(
                    concert_pb2.ListAvailableSeatsRequest(
                        date_id=self.date_id, page_size=LIST_PAGE_SIZE
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_SECONDS,
                ),
            )
            if listed is None or not listed.seats:
                return
            seat = random.choice(listed.seats).seat_number
            held = await self.call(
                "ReserveSeat",
                lambda seat=seat: reservations.ReserveSeat(  # type: ignore[misc]
                    reservation_pb2.ReserveSeatRequest(
                        date_id=self.date_id, seat_number=seat, request_id=str(uuid.uuid4())
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_SECONDS,
                ),
            )
            if held is None:
                continue  # lost the race for that seat: look again
            paid = await self.call(
                "Pay",
                lambda held=held: payments.Pay(  # type: ignore[misc]
                    payment_pb2.PayRequest(
                        reservation_id=held.reservation.reservation_id,
                        request_id=str(uuid.uuid4()),
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_SECONDS,
                ),
            )
            if paid is not None:
                self.paid += 1
                if self.paid >= self.seats and not self.sold_out.is_set():
                    self.sold_out_at = time.monotonic()
                    self.sold_out.set()
            return


async def run_onsale(channels: Channels, phase: dict[str, Any], progress: tqdm) -> list[Recorder]:
    crowd = _Crowd(channels, phase, progress)
    began = time.monotonic()
    cpu_began = time.process_time()
    for recorder in crowd.steps.values():
        recorder.began = began
    fans = [
        asyncio.create_task(crowd.fan(i, session)) for i, session in enumerate(phase["sessions"])
    ]
    everyone = asyncio.gather(*fans, return_exceptions=True)
    sold_out = asyncio.create_task(crowd.sold_out.wait())
    await asyncio.wait(
        [everyone, sold_out], timeout=float(phase["duration"]), return_when="FIRST_COMPLETED"
    )
    # Sold out or out of time: the fans still waiting in line go home.
    for task in fans:
        task.cancel()
    sold_out.cancel()
    await asyncio.gather(everyone, sold_out, return_exceptions=True)
    ended = time.monotonic()
    # A crowd of thousands in one Python process can be the bottleneck itself: say so.
    client_cores = (time.process_time() - cpu_began) / (ended - began)
    for recorder in crowd.steps.values():
        recorder.ended = ended
        recorder.extra["client_cores"] = client_cores
    # Not a method: what the crowd saw as a whole, for the report.
    summary = Recorder("on-sale", "")
    summary.began, summary.ended = began, ended
    summary.extra = {
        "fans": len(fans),
        "paid_seen": crowd.paid,
        "seats": crowd.seats,
        "sold_out_after": None if crowd.sold_out_at is None else crowd.sold_out_at - began,
        "client_cores": client_cores,
        "watch_messages": crowd.watch_messages,
    }
    return [*crowd.steps.values(), summary]
