"""The load generator's open-loop phase (the storm's GetQueueStatus probe): calls go out on
schedule whatever the answers do, and latency counts from each call's due time."""

from __future__ import annotations

import base64

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from loadgen.drive import Channels, run_phase

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
