"""A cap on the calls one process serves at once (CONCERT_MAX_CONCURRENT_CALLS).

Beyond it a call is refused at once, RESOURCE_EXHAUSTED `SERVER_BUSY` with
RetryInfo, instead of piling up memory and latency for everyone (open watch
streams count: each is a call in progress). grpcio's own
maximum_concurrent_rpcs would refuse without an ErrorInfo; this layer gives
the precise status. Health and reflection are not counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from server.errors import ErrorReason, ResourceExhausted
from server.interceptors import Call, Layer, StreamProceed, UnaryProceed


class CallLimitLayer(Layer):
    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.in_flight = 0

    def _enter(self) -> None:
        if self.in_flight >= self.max_calls:
            raise ResourceExhausted(
                ErrorReason.ERROR_REASON_SERVER_BUSY,
                "the server is serving as many calls as it can; retry shortly",
                metadata={"max_calls": str(self.max_calls)},
                retry_after_seconds=1.0,
            )
        self.in_flight += 1

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        self._enter()
        try:
            return await proceed(call)
        finally:
            self.in_flight -= 1

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        self._enter()
        try:
            async for item in proceed(call):
                yield item
        finally:
            self.in_flight -= 1
