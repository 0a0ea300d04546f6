"""The operator's key in front of AdminService.

No key presented: UNAUTHENTICATED. A wrong key, or no key configured on the
server: PERMISSION_DENIED. The comparison is constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from server.credentials import bearer_credential
from server.errors import PermissionDenied, Unauthenticated
from server.interceptors import method_service, wrap_handler

ADMIN_SERVICE = "concert.v1.AdminService"


def check_admin_key(configured: str | None, presented: str | None) -> None:
    if presented is None:
        raise Unauthenticated("ADMIN_KEY_MISSING", "AdminService requires the operator's key")
    if configured is None:
        raise PermissionDenied("ADMIN_KEY_INVALID", "no operator key is configured on this server")
    if not hmac.compare_digest(presented.encode(), configured.encode()):
        raise PermissionDenied("ADMIN_KEY_INVALID", "wrong operator key")


class AdminKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, admin_key: str | None) -> None:
        self._admin_key = admin_key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or method_service(handler_call_details.method) != ADMIN_SERVICE:
            return handler
        presented = bearer_credential(handler_call_details.invocation_metadata)
        admin_key = self._admin_key

        async def around_unary(request: Any, context: ServicerContext, proceed: Any) -> Any:
            check_admin_key(admin_key, presented)
            return await proceed()

        async def around_stream(
            request: Any, context: ServicerContext, proceed: Any
        ) -> AsyncIterator[Any]:
            check_admin_key(admin_key, presented)
            async for item in proceed():
                yield item

        return wrap_handler(handler, around_unary, around_stream)
