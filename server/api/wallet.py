"""concert.v1.WalletService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import wallet_pb2_grpc
from server.context import ServiceContext


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(WalletService(ctx), server)
