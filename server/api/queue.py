"""concert.v1.QueueService: decode the request, call the use case, encode the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc.aio import ServicerContext

from concert.v1 import queue_pb2, queue_pb2_grpc
from server.accounts.runtime import AccountRuntime
from server.api.features import Features
from server.client_address import caller_address
from server.context import ServiceContext
from server.credentials import bearer_credential
from server.queue.issue import authenticate_issue, take_place_in_line
from server.queue.presence import QueuePresence
from server.queue.runtime import QueueRuntime


class QueueService(queue_pb2_grpc.QueueServiceServicer):
    def __init__(self, ctx: ServiceContext, accounts: AccountRuntime, queue: QueueRuntime) -> None:
        self._ctx = ctx
        self._accounts = accounts
        self._queue = queue
        self._presence = QueuePresence(ctx.pool, ctx.clock, ctx.signer, queue)

    async def IssueToken(
        self, request: queue_pb2.IssueTokenRequest, context: ServicerContext
    ) -> queue_pb2.IssueTokenResponse:
        ctx = self._ctx
        address = caller_address(context, ctx.settings.trusted_proxies)
        user_id = await authenticate_issue(
            ctx.pool, ctx.clock, ctx.signer, self._accounts, request, address
        )
        issued = await take_place_in_line(ctx.pool, ctx.clock, self._queue, self._presence, user_id)
        return queue_pb2.IssueTokenResponse(token=issued.credential, status=issued.status)

    async def GetQueueStatus(
        self, request: queue_pb2.GetQueueStatusRequest, context: ServicerContext
    ) -> queue_pb2.GetQueueStatusResponse:
        shown = await self._presence.status(bearer_credential(context.invocation_metadata()))
        return queue_pb2.GetQueueStatusResponse(status=shown.status, token=shown.credential)

    async def WatchQueueStatus(
        self, request: queue_pb2.WatchQueueStatusRequest, context: ServicerContext
    ) -> AsyncIterator[queue_pb2.WatchQueueStatusResponse]:
        credential = bearer_credential(context.invocation_metadata())
        async for shown in self._presence.watch(credential):
            yield queue_pb2.WatchQueueStatusResponse(status=shown.status, token=shown.credential)

    async def RefreshToken(
        self, request: queue_pb2.RefreshTokenRequest, context: ServicerContext
    ) -> queue_pb2.RefreshTokenResponse:
        shown = await self._presence.refresh(bearer_credential(context.invocation_metadata()))
        return queue_pb2.RefreshTokenResponse(token=shown.credential, status=shown.status)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    queue_pb2_grpc.add_QueueServiceServicer_to_server(
        QueueService(ctx, features.accounts, features.queue), server
    )
