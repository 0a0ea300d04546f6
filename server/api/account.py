"""concert.v1.AccountService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import account_pb2_grpc
from server.context import ServiceContext


class AccountService(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    account_pb2_grpc.add_AccountServiceServicer_to_server(AccountService(ctx), server)
