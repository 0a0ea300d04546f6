"""concert.v1.ReservationService: decode the request, call the use case, encode the reply.

The queue gate in front binds the admitted fan; every use case acts for them.
"""

from __future__ import annotations

from grpc.aio import ServicerContext

from concert.v1 import reservation_pb2, reservation_pb2_grpc
from server.api.features import Features
from server.booking import holds
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext
from server.fan import current_fan


class ReservationService(reservation_pb2_grpc.ReservationServiceServicer):
    def __init__(self, ctx: ServiceContext, booking: BookingRuntime) -> None:
        self._ctx = ctx
        self._booking = booking

    async def ReserveSeat(
        self, request: reservation_pb2.ReserveSeatRequest, context: ServicerContext
    ) -> reservation_pb2.ReserveSeatResponse:
        return await holds.hold_seat(self._ctx, self._booking, current_fan(), request)

    async def GetReservation(
        self, request: reservation_pb2.GetReservationRequest, context: ServicerContext
    ) -> reservation_pb2.GetReservationResponse:
        return await holds.get_reservation(self._ctx, current_fan(), request)

    async def CancelReservation(
        self, request: reservation_pb2.CancelReservationRequest, context: ServicerContext
    ) -> reservation_pb2.CancelReservationResponse:
        return await holds.cancel_reservation(self._ctx, self._booking, current_fan(), request)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    reservation_pb2_grpc.add_ReservationServiceServicer_to_server(
        ReservationService(ctx, features.booking), server
    )
