"""concert.v1.PaymentCallbackService: payment modules report the payments they took."""

from __future__ import annotations

import grpc

from concert.v1 import payment_callback_pb2, payment_callback_pb2_grpc
from server.api.features import Features
from server.booking.module_auth import authenticate_module
from server.booking.module_payments import confirm_module_payment
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext


class PaymentCallbackService(payment_callback_pb2_grpc.PaymentCallbackServiceServicer):
    def __init__(self, ctx: ServiceContext, booking: BookingRuntime) -> None:
        self._ctx = ctx
        self._booking = booking

    async def ConfirmModulePayment(
        self,
        request: payment_callback_pb2.ConfirmModulePaymentRequest,
        context: grpc.aio.ServicerContext,
    ) -> payment_callback_pb2.ConfirmModulePaymentResponse:
        module_id = authenticate_module(
            self._booking.module_secrets,
            self._ctx.clock.now(),
            context.invocation_metadata() or (),
            request,
        )
        return await confirm_module_payment(self._ctx, self._booking, module_id, request)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    payment_callback_pb2_grpc.add_PaymentCallbackServiceServicer_to_server(
        PaymentCallbackService(ctx, features.booking), server
    )
