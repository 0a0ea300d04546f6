"""The observability interceptor around handlers of every kind, on a small probe server.

The probe service lives in the concert.v1 package so that the ErrorLayer
maps its failures exactly as it does for the real services.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from server.errors import ErrorReason, FailedPrecondition
from server.interceptors import CallPipeline, ErrorLayer
from server.observability.interceptor import ObservabilityLayer
from server.observability.metrics import Metrics
from tests.observability.json_logs import json_log_lines, records
from tests.support import eventually

SERVICE = "concert.v1.ProbeService"
probe_log = logging.getLogger("server.probe")


class Probe:
    def __init__(self) -> None:
        self.blocked = asyncio.Event()
        self.release = asyncio.Event()

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        probe_log.info("echo inside the handler")
        return request

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise FailedPrecondition(ErrorReason.ERROR_REASON_TOKEN_COMPLETED, "refused")

    async def block(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.blocked.set()
        await self.release.wait()
        return request

    async def count(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        for index in range(3):
            probe_log.info("stream item %d", index)
            yield bytes([index])

    async def count_then_fail(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"\x00"
        raise FailedPrecondition(ErrorReason.ERROR_REASON_TOKEN_COMPLETED, "refused midway")

    def handler(self) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler
        stream = grpc.unary_stream_rpc_method_handler
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": unary(self.echo),
                "Fail": unary(self.fail),
                "Block": unary(self.block),
                "Count": stream(self.count),
                "CountThenFail": stream(self.count_then_fail),
            },
        )


@pytest.fixture
async def probe_server() -> AsyncIterator[tuple[str, Probe, Metrics]]:
    metrics = Metrics()
    probe = Probe()
    server = grpc.aio.server(
        interceptors=[CallPipeline([ObservabilityLayer(metrics), ErrorLayer()])]
    )
    server.add_generic_rpc_handlers((probe.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", probe, metrics
    finally:
        probe.release.set()
        await server.stop(0.5)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the `server` loggers write, formatted as in production with JSON logs."""
    with json_log_lines("server") as stream:
        yield stream


def handled(metrics: Metrics, method: str, code: str, kind: str = "unary") -> float:
    found = metrics.registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_type": kind, "grpc_service": SERVICE, "grpc_method": method, "grpc_code": code},
    )
    return found or 0.0


async def test_every_log_line_of_a_call_carries_its_request_id(
    probe_server: tuple[str, Probe, Metrics], json_lines: io.StringIO
) -> None:
    address, _, _ = probe_server
    secret = "Bearer secret-token-that-must-not-be-logged"
    async with grpc.aio.insecure_channel(address) as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        await echo(b"hi", metadata=(("x-request-id", "req-0001"), ("authorization", secret)))
        await echo(b"hi")

    lines = records(json_lines)
    ours = [line for line in lines if line.get("request_id") == "req-0001"]
    assert len(ours) == 2  # the handler's own line, then the call's line
    assert ours[0]["message"] == "echo inside the handler"
    call_line = ours[-1]
    assert call_line["rpc"] == f"/{SERVICE}/Echo"
    assert call_line["code"] == "OK"
    assert call_line["level"] == "DEBUG"
    assert isinstance(call_line["duration_ms"], float)
    # The call without an x-request-id got a fresh one, different from the first.
    others = {line.get("request_id") for line in lines} - {"req-0001"}
    assert len(others) == 1
    assert len(str(others.pop())) == 36  # a UUID
    assert "secret-token" not in json_lines.getvalue()


async def test_a_malformed_request_id_is_replaced(
    probe_server: tuple[str, Probe, Metrics], json_lines: io.StringIO
) -> None:
    address, _, _ = probe_server
    async with grpc.aio.insecure_channel(address) as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        await echo(b"hi", metadata=(("x-request-id", "has spaces; and <punctuation>"),))
        await echo(b"hi", metadata=(("x-request-id", "x" * 200),))
    ids = {line["request_id"] for line in records(json_lines)}
    assert len(ids) == 2
    assert all(len(str(rid)) == 36 for rid in ids)


async def test_the_mapped_error_code_is_counted_and_logged(
    probe_server: tuple[str, Probe, Metrics], json_lines: io.StringIO
) -> None:
    address, _, metrics = probe_server
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(f"/{SERVICE}/Fail")(
                b"", metadata=(("x-request-id", "req-fail"),)
            )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # grpc.aio sends an aborted call's status before the handler's task unwinds
    # through the observability layer: the count and the line may land just
    # after the client has its answer (CI saw the count still 0 once).
    await eventually(
        lambda: handled(metrics, "Fail", "FAILED_PRECONDITION") == 1, "the refusal counted"
    )
    await eventually(
        lambda: any(r.get("request_id") == "req-fail" for r in records(json_lines)),
        "the refusal logged",
    )
    assert handled(metrics, "Fail", "FAILED_PRECONDITION") == 1
    assert handled(metrics, "Fail", "UNKNOWN") == 0
    (line,) = [r for r in records(json_lines) if r.get("request_id") == "req-fail"]
    assert line["code"] == "FAILED_PRECONDITION"


async def test_streams_are_counted_with_their_final_status(
    probe_server: tuple[str, Probe, Metrics], json_lines: io.StringIO
) -> None:
    address, _, metrics = probe_server
    async with grpc.aio.insecure_channel(address) as channel:
        items = [
            item
            async for item in channel.unary_stream(f"/{SERVICE}/Count")(
                b"", metadata=(("x-request-id", "req-stream"),)
            )
        ]
        assert items == [b"\x00", b"\x01", b"\x02"]
        failing = channel.unary_stream(f"/{SERVICE}/CountThenFail")(b"")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in failing:
                pass
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # As for unary calls, a stream's final status may reach the client before
    # the server's side has counted it.
    await eventually(
        lambda: handled(metrics, "CountThenFail", "FAILED_PRECONDITION", "server_stream") == 1,
        "the failed stream counted",
    )
    assert handled(metrics, "Count", "OK", "server_stream") == 1
    assert handled(metrics, "CountThenFail", "FAILED_PRECONDITION", "server_stream") == 1
    stream_lines = [r for r in records(json_lines) if r.get("request_id") == "req-stream"]
    assert [r["message"] for r in stream_lines[:3]] == [f"stream item {i}" for i in range(3)]


async def test_cancelled_and_late_calls_are_told_apart(
    probe_server: tuple[str, Probe, Metrics], json_lines: io.StringIO
) -> None:
    address, probe, metrics = probe_server
    async with grpc.aio.insecure_channel(address) as channel:
        block = channel.unary_unary(f"/{SERVICE}/Block")
        call = block(b"")
        await probe.blocked.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: handled(metrics, "Block", "CANCELLED") == 1, "CANCELLED")

        with pytest.raises(grpc.aio.AioRpcError) as late:
            await block(b"", timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(
            lambda: handled(metrics, "Block", "DEADLINE_EXCEEDED") == 1, "DEADLINE_EXCEEDED"
        )
    # A call the server could not finish in time is the service's problem: a warning.
    warnings = [r for r in records(json_lines) if r.get("code") == "DEADLINE_EXCEEDED"]
    assert warnings and warnings[0]["level"] == "WARNING"
