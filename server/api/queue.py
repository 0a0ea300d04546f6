"""concert.v1.QueueService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import queue_pb2_grpc
from server.context import ServiceContext


class QueueService(queue_pb2_grpc.QueueServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    queue_pb2_grpc.add_QueueServiceServicer_to_server(QueueService(ctx), server)
