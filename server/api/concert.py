"""concert.v1.ConcertService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import concert_pb2_grpc
from server.context import ServiceContext


class ConcertService(concert_pb2_grpc.ConcertServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    concert_pb2_grpc.add_ConcertServiceServicer_to_server(ConcertService(ctx), server)
