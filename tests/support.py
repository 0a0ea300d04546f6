"""Helpers shared by the tests: stubs, error details, free ports."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from concert.v1 import (
    account_pb2_grpc,
    admin_pb2_grpc,
    concert_pb2_grpc,
    payment_pb2_grpc,
    queue_pb2_grpc,
    reservation_pb2_grpc,
    wallet_pb2_grpc,
)
from server.app import App, build_app
from server.clock import Clock
from server.config import Settings

TEST_ADMIN_KEY = "test-admin-key-0123456789"


@dataclass
class Stubs:
    """One stub per concert.v1 service, on one channel."""

    account: account_pb2_grpc.AccountServiceStub
    queue: queue_pb2_grpc.QueueServiceStub
    concert: concert_pb2_grpc.ConcertServiceStub
    reservation: reservation_pb2_grpc.ReservationServiceStub
    payment: payment_pb2_grpc.PaymentServiceStub
    wallet: wallet_pb2_grpc.WalletServiceStub
    admin: admin_pb2_grpc.AdminServiceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            account=account_pb2_grpc.AccountServiceStub(channel),
            queue=queue_pb2_grpc.QueueServiceStub(channel),
            concert=concert_pb2_grpc.ConcertServiceStub(channel),
            reservation=reservation_pb2_grpc.ReservationServiceStub(channel),
            payment=payment_pb2_grpc.PaymentServiceStub(channel),
            wallet=wallet_pb2_grpc.WalletServiceStub(channel),
            admin=admin_pb2_grpc.AdminServiceStub(channel),
        )


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting a credential."""
    return (("authorization", f"Bearer {credential}"),)


ADMIN = bearer(TEST_ADMIN_KEY)


@dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None

    @property
    def reason(self) -> str | None:
        return self.info.reason if self.info else None

    @property
    def bad_fields(self) -> set[str]:
        if self.bad_request is None:
            return set()
        return {v.field for v in self.bad_request.field_violations}


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """The google.rpc details a failed call carried."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found = ErrorDetails(error.code(), error.details() or "", None, None, None)
    for detail in status.details if status else ():
        for attribute, kind in (
            ("info", error_details_pb2.ErrorInfo),
            ("bad_request", error_details_pb2.BadRequest),
            ("retry", error_details_pb2.RetryInfo),
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                setattr(found, attribute, message)
    return found


def is_serving(address: str, timeout: float = 1.0) -> bool:
    """One gRPC health check of the server at address: True if it answers SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_until_serving(
    address: str,
    *,
    alive: Callable[[], bool],
    output: Callable[[], str],
    timeout: float = 60.0,
    name: str = "server",
) -> None:
    """Poll the gRPC health service of a server process until it answers SERVING."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise AssertionError(f"{name} exited early:\n{output()}")
        if is_serving(address):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not SERVING after {timeout}s:\n{output()}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running_app(
    settings: Settings, database_url: str, clock: Clock | None = None
) -> AsyncIterator[App]:
    """A server of the test's own on `database_url` (no scheduled jobs), stopped after."""
    app = await build_app(settings, database_url=database_url, clock=clock, start_jobs=False)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


async def eventually(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Wait for something the server does on its own time (polled; AssertionError
    if it has not happened within `within` seconds)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)
