"""The operator's key in front of AdminService.

No key presented: UNAUTHENTICATED. A wrong key, or no key configured on the
server: PERMISSION_DENIED. The comparison is constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

from server.credentials import bearer_credential
from server.errors import ErrorReason, PermissionDenied, Unauthenticated
from server.interceptors import Call, Layer, MethodInfo, StreamProceed, UnaryProceed

ADMIN_SERVICE = "concert.v1.AdminService"


def check_admin_key(configured: str | None, presented: str | None) -> None:
    if presented is None:
        raise Unauthenticated(
            ErrorReason.ERROR_REASON_ADMIN_KEY_MISSING, "AdminService requires the operator's key"
        )
    if configured is None:
        raise PermissionDenied(
            ErrorReason.ERROR_REASON_ADMIN_KEY_INVALID,
            "no operator key is configured on this server",
        )
    if not hmac.compare_digest(presented.encode(), configured.encode()):
        raise PermissionDenied(ErrorReason.ERROR_REASON_ADMIN_KEY_INVALID, "wrong operator key")


class AdminKeyLayer(Layer):
    def __init__(self, admin_key: str | None) -> None:
        self._admin_key = admin_key

    def applies_to(self, info: MethodInfo) -> bool:
        return info.service == ADMIN_SERVICE

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        check_admin_key(self._admin_key, bearer_credential(call.metadata()))
        return await proceed(call)

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        check_admin_key(self._admin_key, bearer_credential(call.metadata()))
        async for item in proceed(call):
            yield item
