"""concert.v1.AdminService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from concert.v1 import admin_pb2_grpc
from server.context import ServiceContext


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx


def register(server: object, ctx: ServiceContext) -> None:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(ctx), server)
