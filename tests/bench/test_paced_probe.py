"""The load generator's open-loop phase (the storm's GetQueueStatus probe): calls go out on
schedule whatever the answers do, and latency counts from each call's due time. And its
closed-loop clients: the storm's fans honour RetryInfo, the junk storm's bots do not."""

from __future__ import annotations

import base64
import math
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from loadgen.drive import Channels, run_phase
from loadgen.server_metrics import quantile_bound

from tests.support import free_port


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


async def test_an_open_loop_phase_sends_on_schedule_and_times_from_the_due_time() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    channels = Channels(f"127.0.0.1:{port}", 2)
    try:
        await channels.ready()
        rate, duration = 50.0, 1.0
        phase = {
            "name": "probe",
            "method": "/grpc.health.v1.Health/Check",
            "calls": [
                {
                    "request": base64.b64encode(
                        health_pb2.HealthCheckRequest().SerializeToString()
                    ).decode(),
                    "metadata": [],
                }
            ],
            "requests": 10_000,
            "duration": duration,
            "concurrency": 4,
            "rate": rate,
        }
        recorder = await run_phase(channels, phase, _NoProgress())  # type: ignore[arg-type]
    finally:
        await channels.close()
        await server.stop(None)

    # Exactly the calls due within the duration, each recorded from its due time.
    assert len(recorder.codes) == int(rate * duration)
    assert set(recorder.codes) == {"OK"}
    due = sorted(recorder.starts)
    assert due == [recorder.began + i / rate for i in range(len(due))]
    assert all(latency > 0 for latency in recorder.latencies)


async def _refusing_server(retry_seconds: float) -> tuple[grpc.aio.Server, int]:
    """A server whose one method refuses every call RESOURCE_EXHAUSTED, with a RetryInfo."""
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=retry_seconds))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    # As server/errors.py makes them: code and message agree with the call's.
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="busy", details=[detail]
    )

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "busy",
            (("grpc-status-details-bin", status.SerializeToString()),),
        )
        raise AssertionError("abort raises")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Busy", {"Call": grpc.unary_unary_rpc_method_handler(refuse)}
            ),
        )
    )
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


async def test_clients_that_honour_retry_info_wait_the_delay_and_bots_do_not() -> None:
    server, port = await _refusing_server(retry_seconds=0.3)
    channels = Channels(f"127.0.0.1:{port}", 2)
    try:
        await channels.ready()

        async def calls_made(honour: bool) -> int:
            phase = {
                "name": "refused",
                "method": "/test.Busy/Call",
                "calls": [{"request": "", "metadata": []}],
                "requests": 100_000,
                "duration": 1.0,
                "concurrency": 2,
                "honour_retry_info": honour,
            }
            recorder = await run_phase(channels, phase, _NoProgress())  # type: ignore[arg-type]
            assert set(recorder.codes) == {"RESOURCE_EXHAUSTED"}
            return len(recorder.codes)

        # Each polite client waits at least 0.3 s after each refusal: at most
        # 4 calls in a second; a bot calls again at once.
        assert await calls_made(honour=True) <= 2 * 4
        assert await calls_made(honour=False) > 50
    finally:
        await channels.close()
        await server.stop(None)


def test_the_loop_lag_quantile_is_the_bound_of_its_bucket() -> None:
    """Cumulative buckets read before and after a stage: the stage's own
    observations decide, and a quantile past the last bound is infinite."""
    before = {0.001: 10.0, 0.005: 10.0, 0.05: 10.0, math.inf: 10.0}
    # The stage: 90 samples under 1 ms, 9 under 5 ms, 1 under 50 ms.
    after = {0.001: 100.0, 0.005: 109.0, 0.05: 110.0, math.inf: 110.0}
    assert quantile_bound(before, after, 0.5) == 0.001
    assert quantile_bound(before, after, 0.95) == 0.005
    assert quantile_bound(before, after, 0.999) == 0.05
    stalled = {0.001: 10.0, 0.005: 10.0, 0.05: 10.0, math.inf: 20.0}
    assert quantile_bound(before, stalled, 0.5) == math.inf
    assert math.isnan(quantile_bound(before, before, 0.5))
