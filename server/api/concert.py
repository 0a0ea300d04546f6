"""concert.v1.ConcertService: decode the request, call the use case, encode the reply.

The queue gate in front admits the caller; browsing needs no more than that.
"""

from __future__ import annotations

from grpc.aio import ServicerContext

from concert.v1 import concert_pb2, concert_pb2_grpc
from server.api.features import Features
from server.booking import concerts
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext
from server.fan import current_fan


class ConcertService(concert_pb2_grpc.ConcertServiceServicer):
    def __init__(self, ctx: ServiceContext, booking: BookingRuntime) -> None:
        self._ctx = ctx
        self._booking = booking

    async def ListConcerts(
        self, request: concert_pb2.ListConcertsRequest, context: ServicerContext
    ) -> concert_pb2.ListConcertsResponse:
        current_fan()
        return await concerts.list_concerts(self._ctx, request)

    async def ListAvailableDates(
        self, request: concert_pb2.ListAvailableDatesRequest, context: ServicerContext
    ) -> concert_pb2.ListAvailableDatesResponse:
        current_fan()
        return await concerts.list_available_dates(self._ctx, request)

    async def ListAvailableSeats(
        self, request: concert_pb2.ListAvailableSeatsRequest, context: ServicerContext
    ) -> concert_pb2.ListAvailableSeatsResponse:
        current_fan()
        return await concerts.list_available_seats(self._ctx, self._booking, request)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    concert_pb2_grpc.add_ConcertServiceServicer_to_server(
        ConcertService(ctx, features.booking), server
    )
