"""concert.v1.AdminService: decode the request, call the use case, encode the reply.

Methods not overridden here answer UNIMPLEMENTED (the generated base class).
"""

from __future__ import annotations

from grpc.aio import ServicerContext

from concert.v1 import admin_pb2, admin_pb2_grpc
from server.api.features import Features
from server.booking.concerts import create_concert
from server.context import ServiceContext
from server.queue.admin import queue_stats, set_admission
from server.queue.runtime import QueueRuntime


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, ctx: ServiceContext, queue: QueueRuntime) -> None:
        self._ctx = ctx
        self._queue = queue

    async def CreateConcert(
        self, request: admin_pb2.CreateConcertRequest, context: ServicerContext
    ) -> admin_pb2.CreateConcertResponse:
        return await create_concert(self._ctx, request)

    async def SetAdmission(
        self, request: admin_pb2.SetAdmissionRequest, context: ServicerContext
    ) -> admin_pb2.SetAdmissionResponse:
        return await set_admission(self._ctx.pool, self._ctx.clock, self._queue, request)

    async def GetQueueStats(
        self, request: admin_pb2.GetQueueStatsRequest, context: ServicerContext
    ) -> admin_pb2.GetQueueStatsResponse:
        return await queue_stats(self._ctx.pool, self._ctx.clock)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(ctx, features.queue), server)
