"""`python -m server healthcheck [--service liveness|readiness]`: asks this container's server.

For Docker's HEALTHCHECK and exec probes (Kubernetes' native gRPC probes work
too). It calls grpc.health.v1.Health/Check over loopback, on
CONCERT_HEALTH_LISTEN's plaintext port when set (so it works whatever TLS the
service port speaks), else on CONCERT_LISTEN's, and exits 0 only for SERVING:
1 for NOT_SERVING (draining, or not ready) or no answer in time. The default
service "" answers as readiness does.
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
    target = loopback_target(settings.health_listen or settings.listen)
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
