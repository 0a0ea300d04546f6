"""`python -m server healthcheck`, the Docker HEALTHCHECK, against a running server."""

from __future__ import annotations

import asyncio
import os
import sys

from grpc_health.v1 import health_pb2

from server.app import App
from server.observability.healthcheck import loopback_target
from tests.support import free_port


async def healthcheck(listen: str, *args: str) -> tuple[int, str]:
    # A child process, awaited without blocking: the server runs on this loop.
    env = {**os.environ, "CONCERT_LISTEN": listen}
    env.pop("CONCERT_DATABASE_URL", None)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "healthcheck",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode is not None
    return child.returncode, output.decode()


async def test_healthy_while_serving_unhealthy_once_draining(app: App) -> None:
    listen = f"0.0.0.0:{app.port}"  # as in the image: reached over loopback
    code, output = await healthcheck(listen)
    assert (code, "SERVING" in output) == (0, True), output

    await app.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, output = await healthcheck(listen)
    assert code == 1
    assert "NOT_SERVING" in output
    # Liveness is asked for by name, and does not follow readiness.
    code, output = await healthcheck(listen, "--service", "liveness")
    assert code == 0, output


async def test_unhealthy_when_nothing_listens() -> None:
    code, output = await healthcheck(f"127.0.0.1:{free_port()}")
    assert code == 1
    assert "UNAVAILABLE" in output


def test_loopback_target() -> None:
    assert loopback_target("0.0.0.0:50051") == "127.0.0.1:50051"
    assert loopback_target("[::]:50051") == "127.0.0.1:50051"
    assert loopback_target("10.1.2.3:7000") == "10.1.2.3:7000"
