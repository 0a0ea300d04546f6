"""concert.v1.PaymentService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import payment_pb2_grpc
from server.context import ServiceContext


class PaymentService(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentService(ctx), server)
