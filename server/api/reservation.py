"""concert.v1.ReservationService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import reservation_pb2_grpc
from server.context import ServiceContext


class ReservationService(reservation_pb2_grpc.ReservationServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    reservation_pb2_grpc.add_ReservationServiceServicer_to_server(ReservationService(ctx), server)
