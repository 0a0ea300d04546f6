"""Request size limits per method, and bodies that do not decode, on a real server process.

Raw bytes go over a real channel (no client-side protobuf to keep us honest):
invalid UTF-8 in a string field is INVALID_ARGUMENT with an ErrorInfo and no
traceback in the log; a body over its method's limit is RESOURCE_EXHAUSTED
before it is parsed; fifty of them at once leave the server's memory where it
was.
"""

from __future__ import annotations

import asyncio

import grpc
import psutil
import pytest

from concert.v1 import account_pb2, admin_pb2
from server.security.request_limits import MAX_ANONYMOUS_BYTES, MAX_CREATE_CONCERT_BYTES
from tests.e2e.servers import ServerProcess
from tests.support import ADMIN, error_details

# SignInRequest: field 1 (email) and 2 (password), length-delimited strings.
INVALID_UTF8_SIGN_IN = b"\x0a\x04\xff\xfe\xfd\xfc\x12\x0clong enough!"


def _raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_invalid_utf8_is_invalid_argument_without_a_traceback(server: ServerProcess) -> None:
    before = server.log
    async with grpc.aio.insecure_channel(server.address) as channel:
        for method in (
            "/concert.v1.AccountService/SignIn",
            "/concert.v1.AccountService/SignUp",
            "/concert.v1.QueueService/IssueToken",
            "/concert.v1.WalletService/GetBalance",
        ):
            error = await _error(_raw(channel, method)(INVALID_UTF8_SIGN_IN, metadata=ADMIN))
            details = error_details(error)
            assert (details.code, details.reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "REQUEST_MALFORMED",
            ), method
            assert details.bad_fields == {"request"}, method
    new_log = server.log[len(before) :]
    assert "Traceback" not in new_log and "ERROR" not in new_log, new_log[-2000:]


async def test_each_method_has_its_size_limit(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        big = account_pb2.SignInRequest(
            email="a@example.com", password="x" * MAX_ANONYMOUS_BYTES
        ).SerializeToString()
        error = await _error(_raw(channel, "/concert.v1.AccountService/SignIn")(big))
        details = error_details(error)
        assert (details.code, details.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "REQUEST_TOO_LARGE",
        )
        assert details.info.metadata["limit_bytes"] == str(MAX_ANONYMOUS_BYTES)
        # CreateConcert may be large: 20,000 seats fit (its own checks then apply).
        concert = admin_pb2.CreateConcertRequest(
            title="Stadium",
            venue="Field",
            dates=[
                admin_pb2.ConcertDateSpec(
                    seats=[admin_pb2.SeatSpec(seat_number=n, price=10) for n in range(1, 20_001)]
                )
            ],
        ).SerializeToString()
        assert MAX_ANONYMOUS_BYTES < len(concert) < MAX_CREATE_CONCERT_BYTES
        error = await _error(
            _raw(channel, "/concert.v1.AdminService/CreateConcert")(concert, metadata=ADMIN)
        )
        assert error_details(error).reason == "INVALID_ARGUMENT"  # no start_time: parsed


async def test_fifty_oversized_calls_at_once_leave_memory_where_it_was(
    server: ServerProcess,
) -> None:
    process = psutil.Process(server.process.pid)
    body = account_pb2.SignInRequest(
        email="a@example.com", password="y" * (MAX_CREATE_CONCERT_BYTES - 100)
    ).SerializeToString()
    async with grpc.aio.insecure_channel(
        server.address, options=[("grpc.max_send_message_length", 2 * len(body))]
    ) as channel:
        sign_in = _raw(channel, "/concert.v1.AccountService/SignIn")
        await asyncio.gather(*(_error(sign_in(body)) for _ in range(5)))  # warm up
        await asyncio.sleep(1.0)
        before = process.memory_info().rss
        errors = await asyncio.gather(*(_error(sign_in(body)) for _ in range(50)))
        await asyncio.sleep(1.0)  # the burst is over: what stays is what it cost
        after = process.memory_info().rss
    assert {error_details(e).reason for e in errors} == {"REQUEST_TOO_LARGE"}
    grown_mib = (after - before) / 2**20
    print(f"RSS grew {grown_mib:.1f} MiB")
    assert grown_mib < 20, f"RSS grew {grown_mib:.1f} MiB"
