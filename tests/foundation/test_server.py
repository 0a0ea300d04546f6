"""The server's standard surface: reflection, health, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.app import SERVICE_NAMES, App
from server.interceptors import CallPipeline, ErrorLayer
from tests.support import ADMIN, Stubs, error_details, free_port, wait_until_serving

CONCERT_SERVICES = {
    "concert.v1.AccountService",
    "concert.v1.QueueService",
    "concert.v1.ConcertService",
    "concert.v1.ReservationService",
    "concert.v1.PaymentService",
    "concert.v1.PaymentCallbackService",
    "concert.v1.WalletService",
    "concert.v1.AdminService",
}


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in responses:
        names |= {s.name for s in response.list_services_response.service}
    assert CONCERT_SERVICES <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert set(SERVICE_NAMES) == CONCERT_SERVICES


async def test_health_is_serving_for_the_server_and_each_service(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *sorted(CONCERT_SERVICES)):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_health_turns_not_serving_when_shutdown_begins(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(app.stop(grace=1.0))
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_admin_service_requires_the_operator_key(stubs: Stubs) -> None:
    from concert.v1 import admin_pb2

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(missing.value).reason == "ADMIN_KEY_MISSING"

    wrong = (("authorization", "Bearer not-the-key-at-all"),)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=wrong)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(denied.value).reason == "ADMIN_KEY_INVALID"
    assert ADMIN  # the right key is exercised by the admin tests


def test_sigterm_drains_and_exits_zero(database_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CONCERT_DATABASE_URL": database_url,
        "CONCERT_LISTEN": f"127.0.0.1:{port}",
        "CONCERT_SEED_DEMO": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(
            f"127.0.0.1:{port}",
            alive=lambda: process.poll() is None,
            output=lambda: process.stderr.read() if process.stderr else "",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_method_not_built_answers_unimplemented_not_internal(app: App) -> None:
    from concert.v1 import queue_pb2, queue_pb2_grpc

    class Bare(queue_pb2_grpc.QueueServiceServicer):
        pass

    server = grpc.aio.server(interceptors=[CallPipeline([ErrorLayer()])])
    queue_pb2_grpc.add_QueueServiceServicer_to_server(Bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = queue_pb2_grpc.QueueServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetQueueStatus(queue_pb2.GetQueueStatusRequest())
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert error_details(raised.value).reason == "UNIMPLEMENTED"
    finally:
        await server.stop(0)


async def test_a_burst_of_calls_beyond_grpc_default_backlog_is_served_not_cancelled(
    app: App,
) -> None:
    # gRPC core cancels calls past 1,000 pending by default; on-sale day is such a burst.
    async with grpc.aio.insecure_channel(app.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def check() -> grpc.StatusCode:
            try:
                await health.Check(health_pb2.HealthCheckRequest())
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                return error.code()

        codes = await asyncio.gather(*(check() for _ in range(3000)))
    assert codes.count(grpc.StatusCode.OK) == 3000


async def test_a_refused_call_leaves_nothing_for_the_cyclic_collector() -> None:
    """A handler's error becomes its status without context.abort, whose AbortError
    grpcio keeps on the call: a reference cycle through the refused call's frames
    that only a full collection frees (20-40 ms of the event loop each, every few
    seconds under a storm of refusals). Refused calls leave no more cyclic garbage
    than calls answered OK, counted with the collector off."""
    import gc

    from concert.v1 import queue_pb2, queue_pb2_grpc
    from server.errors import ErrorReason, ResourceExhausted

    class Refusing(queue_pb2_grpc.QueueServiceServicer):
        async def GetQueueStatus(
            self, request: queue_pb2.GetQueueStatusRequest, context: grpc.aio.ServicerContext
        ) -> queue_pb2.GetQueueStatusResponse:
            if ("refuse", "yes") in tuple(context.invocation_metadata() or ()):
                raise ResourceExhausted(
                    ErrorReason.ERROR_REASON_PASSWORD_HASHING_BUSY, "busy", retry_after_seconds=1
                )
            return queue_pb2.GetQueueStatusResponse()

    server = grpc.aio.server(interceptors=[CallPipeline([ErrorLayer()])])
    queue_pb2_grpc.add_QueueServiceServicer_to_server(Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    calls = 100
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = queue_pb2_grpc.QueueServiceStub(channel)

            async def status(refuse: bool) -> grpc.StatusCode:
                metadata = (("refuse", "yes"),) if refuse else ()
                call = stub.GetQueueStatus(queue_pb2.GetQueueStatusRequest(), metadata=metadata)
                return await call.code()  # the outcome, without raising in this process

            assert await status(refuse=True) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await status(refuse=False) == grpc.StatusCode.OK
            gc.collect()
            gc.disable()
            try:
                for _ in range(calls):
                    assert await status(refuse=False) == grpc.StatusCode.OK
                after_ok = gc.collect()
                for _ in range(calls):
                    assert await status(refuse=True) == grpc.StatusCode.RESOURCE_EXHAUSTED
                after_refused = gc.collect()
            finally:
                gc.enable()
    finally:
        await server.stop(0)
    # Measured: 500 and 600 objects; before, 500 and 4,362 (each refusal left
    # its AbortError, the exception it answered, their tracebacks and ~20 frames).
    assert after_refused <= after_ok + 10 * calls, (after_ok, after_refused)
