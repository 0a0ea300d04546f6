"""paymentmodule.v1.PaymentModuleService: the servicer (one line per method, in
proto order) and the layer that turns every failure into a precise status."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import grpc
from paymentmodule.v1 import payment_module_pb2 as pb
from paymentmodule.v1 import payment_module_pb2_grpc

from server.clock import Clock
from server.errors import Unauthenticated
from server.interceptors import Call, Layer, MethodInfo, UnaryProceed, end_with_error
from server.module_signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    list_text,
    parse_timestamp,
    refund_text,
    signature_holds,
)
from server.payment_module import reasons
from server.payment_module.callbacks import CallbackDispatcher
from server.payment_module.payments import ModulePayments, window_micros

ERROR_DOMAIN = "paymentmodule.v1"


class ModuleErrorLayer(Layer):
    """The server's error mapping (interceptors.as_service_error) for this
    package's methods, in this package's error domain: never UNKNOWN."""

    def applies_to(self, info: MethodInfo) -> bool:
        return info.service.startswith(f"{ERROR_DOMAIN}.")

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        try:
            return await proceed(call)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            end_with_error(call.context, call.method, exc, ERROR_DOMAIN)
            return None


class PaymentModuleService(payment_module_pb2_grpc.PaymentModuleServiceServicer):
    def __init__(
        self,
        payments: ModulePayments,
        dispatcher: CallbackDispatcher,
        module_id: str,
        secret: bytes,
        clock: Clock,
    ) -> None:
        self._payments = payments
        self._dispatcher = dispatcher
        self._module_id = module_id
        self._secret = secret
        self._clock = clock

    async def TopUp(
        self, request: pb.TopUpRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopUpResponse:
        return await self._payments.top_up(request)

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        return await self._payments.get_balance(request)

    async def PayReservation(
        self, request: pb.PayReservationRequest, context: grpc.aio.ServicerContext
    ) -> pb.PayReservationResponse:
        payment = await self._payments.pay(request)
        if payment.server_answer == pb.SERVER_ANSWER_PENDING:
            self._dispatcher.wake()
        return pb.PayReservationResponse(payment=payment)

    async def GetModulePayment(
        self, request: pb.GetModulePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModulePaymentResponse:
        return pb.GetModulePaymentResponse(payment=await self._payments.get(request))

    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefundPaymentResponse:
        authenticate_merchant(
            self._secret,
            self._clock.now(),
            context.invocation_metadata() or (),
            lambda timestamp: refund_text(
                self._module_id, timestamp, request.payment_id, request.request_id
            ),
            "ask for a refund",
        )
        return pb.RefundPaymentResponse(payment=await self._payments.refund(request))

    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPaymentsResponse:
        start, end = window_micros(request)
        authenticate_merchant(
            self._secret,
            self._clock.now(),
            context.invocation_metadata() or (),
            lambda timestamp: list_text(
                self._module_id, timestamp, start, end, request.page_size, request.page_token
            ),
            "read the book",
        )
        return await self._payments.list_payments(request)


def authenticate_merchant(
    secret: bytes,
    now: datetime,
    metadata: Iterable[tuple[str, str | bytes]],
    signed_text: Callable[[int], bytes],
    what: str,
) -> None:
    """Only the holder of the shared secret (the concert server) may call a
    merchant's method; one message whatever was wrong. signed_text(timestamp)
    is the text the method's comment says is signed."""
    headers = {key: value for key, value in metadata if isinstance(value, str)}
    timestamp = parse_timestamp(headers.get(TIMESTAMP_HEADER, ""))
    text = signed_text(timestamp or 0)
    if not signature_holds(secret, text, headers.get(SIGNATURE_HEADER, ""), timestamp, now):
        raise Unauthenticated(
            reasons.MODULE_SIGNATURE_INVALID,
            f"only the merchant may {what}, with a fresh signed timestamp",
        )
