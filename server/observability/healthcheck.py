"""`python -m server healthcheck`: asks this container's server for its health.

For Docker's HEALTHCHECK (Kubernetes uses its native gRPC probe instead). It
calls grpc.health.v1.Health/Check on CONCERT_LISTEN's port over loopback and
exits 0 only for SERVING: 1 for NOT_SERVING (draining) or no answer in time.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import Settings


def loopback_target(listen: str) -> str:
    """The address to reach a server listening on `listen` from the same host."""
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", "*", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


def check_health(settings: Settings, *, service: str = "", timeout: float = 3.0) -> int:
    target = loopback_target(settings.listen)
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {target}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {target}: {status}", file=sys.stderr)
        return 1
    print(f"healthy: {target}: {status}")
    return 0
