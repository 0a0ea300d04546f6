"""concert.v1.PaymentService: decode the request, call the use case, encode the reply.

The queue gate in front binds the admitted fan; every use case acts for them.
"""

from __future__ import annotations

from grpc.aio import ServicerContext

from concert.v1 import payment_pb2, payment_pb2_grpc
from server.api.features import Features
from server.booking import payment_views, payments
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext
from server.fan import current_fan


class PaymentService(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, ctx: ServiceContext, booking: BookingRuntime) -> None:
        self._ctx = ctx
        self._booking = booking

    async def Pay(
        self, request: payment_pb2.PayRequest, context: ServicerContext
    ) -> payment_pb2.PayResponse:
        return await payments.pay(self._ctx, self._booking, current_fan(), request)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: ServicerContext
    ) -> payment_pb2.GetPaymentResponse:
        return await payment_views.get_payment(self._ctx, current_fan(), request)

    async def GetModulePayment(
        self, request: payment_pb2.GetModulePaymentRequest, context: ServicerContext
    ) -> payment_pb2.GetModulePaymentResponse:
        return await payment_views.get_module_payment(self._ctx, current_fan(), request)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(
        PaymentService(ctx, features.booking), server
    )
