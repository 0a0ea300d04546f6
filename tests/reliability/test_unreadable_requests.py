"""Unreadable or oversized bodies to every method the server and the payment module
serve, grpcio's own included: a precise status with an ErrorInfo, never UNKNOWN,
and no traceback in the log.

grpc.health.v1 (Check and Watch) on the service port and on the plaintext health
port, server reflection (v1 and v1alpha, a bidi stream) and the payment module's
methods and health. Bodies are raw bytes over a real channel: no client-side
protobuf to keep us honest.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from server.app import App
from server.clock import FakeClock
from server.config import Settings
from server.payment_module.app import ModuleApp
from server.payment_module.settings import ModuleSettings
from server.security.request_limits import MAX_ANONYMOUS_BYTES
from tests.payment_modules import MODULE, running_module, secrets_file
from tests.support import ErrorDetails, error_details, free_port, running_app
from tests.wire import length_delimited

CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)

# Field 1, length-delimited, not UTF-8 (HealthCheckRequest.service,
# TopUpRequest.account_id, PayReservationRequest.request_id).
INVALID_UTF8 = length_delimited(1, b"\xff\xfe\xfd\xfc")
# Field 1 announces 5 bytes and 2 follow.
TRUNCATED = b"\x0a\x05ab"


OVERSIZED_CHECK = length_delimited(1, b"s" * (MAX_ANONYMOUS_BYTES + 1))
# ServerReflectionRequest: host (1), list_services (7).
REFLECTION_INVALID_UTF8 = length_delimited(7, b"\xc0\xaf")
REFLECTION_900_KIB = length_delimited(1, b"h" * (900 * 1024)) + length_delimited(7, b"*")
LIST_SERVICES = reflection_pb2.ServerReflectionRequest(list_services="*").SerializeToString()

MALFORMED = ("INVALID_ARGUMENT", "REQUEST_MALFORMED")
TOO_LARGE = ("RESOURCE_EXHAUSTED", "REQUEST_TOO_LARGE")


def _outcome(details: ErrorDetails) -> tuple[str, str | None]:
    return details.code.name, details.reason


def _assert_precise(details: ErrorDetails, expected: tuple[str, str], domain: str) -> None:
    assert _outcome(details) == expected, details.message
    assert details.info is not None and details.info.domain == domain
    if expected == MALFORMED:
        assert details.bad_fields == {"request"}


async def _unary(channel: grpc.aio.Channel, method: str, body: bytes) -> ErrorDetails:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(body, timeout=10)
    return error_details(caught.value)


async def _server_stream(channel: grpc.aio.Channel, method: str, body: bytes) -> ErrorDetails:
    call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call(body, timeout=10):
            pass
    return error_details(caught.value)


async def _bidi(
    channel: grpc.aio.Channel, method: str, bodies: list[bytes]
) -> tuple[list[bytes], ErrorDetails | None]:
    call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
    stream = call(iter(bodies), timeout=10)
    replies: list[bytes] = []
    try:
        async for reply in stream:
            replies.append(reply)
    except grpc.aio.AioRpcError as err:
        return replies, error_details(err)
    return replies, None


def _assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, "\n".join(caplog.text.splitlines()[-40:])


async def _health_answers_precisely(address: str) -> None:
    max_send = [("grpc.max_send_message_length", 4 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(address, options=max_send) as channel:
        for body, expected in (
            (INVALID_UTF8, MALFORMED),
            (TRUNCATED, MALFORMED),
            (OVERSIZED_CHECK, TOO_LARGE),
        ):
            _assert_precise(await _unary(channel, CHECK, body), expected, "concert.v1")
            _assert_precise(await _server_stream(channel, WATCH, body), expected, "concert.v1")


async def test_health_on_the_service_port_answers_unreadable_bodies_precisely(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await _health_answers_precisely(app.address)
    _assert_no_error_logged(caplog)


async def test_health_on_the_plaintext_health_port_answers_unreadable_bodies_precisely(
    settings: Settings, database_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_app(settings.replace(health_listen="127.0.0.1:0"), database_url, clock) as a:
        await _health_answers_precisely(f"127.0.0.1:{a.health_port}")
    _assert_no_error_logged(caplog)


async def test_reflection_refuses_large_and_unreadable_requests_and_still_answers(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    big = [("grpc.max_send_message_length", 4 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(app.address, options=big) as channel:
        for method in REFLECTION:
            # A good request is answered; the oversized one after it ends the stream.
            replies, error = await _bidi(channel, method, [LIST_SERVICES, REFLECTION_900_KIB])
            assert len(replies) == 1, method
            assert error is not None, f"{method}: a 900 KiB request was answered"
            _assert_precise(error, TOO_LARGE, "concert.v1")
            assert error.info is not None
            assert error.info.metadata["limit_bytes"] == str(MAX_ANONYMOUS_BYTES)
            replies, error = await _bidi(channel, method, [REFLECTION_INVALID_UTF8])
            assert not replies and error is not None, method
            _assert_precise(error, MALFORMED, "concert.v1")
            replies, error = await _bidi(channel, method, [LIST_SERVICES, LIST_SERVICES])
            assert (len(replies), error) == (2, None), method
    _assert_no_error_logged(caplog)


@pytest.fixture
async def module(
    create_database: Callable[[], str], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[ModuleApp]:
    settings = ModuleSettings(
        listen="127.0.0.1:0",
        server_address=f"127.0.0.1:{free_port()}",
        module_id=MODULE,
        secret_file=secrets_file(tmp_path),
    )
    async with running_module(settings, create_database(), clock) as module_app:
        yield module_app


async def test_the_payment_module_answers_unreadable_bodies_precisely(
    module: ModuleApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with grpc.aio.insecure_channel(module.address) as channel:
        for method in (
            "/paymentmodule.v1.PaymentModuleService/PayReservation",
            "/paymentmodule.v1.PaymentModuleService/TopUp",
            "/paymentmodule.v1.PaymentModuleService/GetBalance",
        ):
            for body in (INVALID_UTF8, TRUNCATED):
                details = await _unary(channel, method, body)
                _assert_precise(details, MALFORMED, "paymentmodule.v1")
        for body, expected in ((INVALID_UTF8, MALFORMED), (OVERSIZED_CHECK, TOO_LARGE)):
            _assert_precise(await _unary(channel, CHECK, body), expected, "paymentmodule.v1")
            _assert_precise(
                await _server_stream(channel, WATCH, body), expected, "paymentmodule.v1"
            )
        _, error = await _bidi(channel, REFLECTION[1], [REFLECTION_INVALID_UTF8])
        assert error is not None
        _assert_precise(error, MALFORMED, "paymentmodule.v1")
    _assert_no_error_logged(caplog)
