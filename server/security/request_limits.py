"""Requests are read only when they fit their method's size limit and decode cleanly.

gRPC decodes a request before any handler runs, and a failure there (invalid
UTF-8 in a string field, any malformed body) used to surface as UNKNOWN with a
traceback per call: an unauthenticated log flood. CallPipeline gives every
method (concert.v1's, grpcio's health and reflection, the payment module's;
on every port) the deserializer below instead. It never raises: an oversized
or undecodable body becomes an UnreadableRequest, which RequestLimitLayer
(just inside the error mapper, before the credential checks) answers for
concert.v1 methods and CallPipeline itself for the others, with the precise
status and an ErrorInfo:

- a body over its method's limit: RESOURCE_EXHAUSTED, REQUEST_TOO_LARGE, before it
  is parsed (a parsed message costs many times its bytes);
- a body that does not decode: INVALID_ARGUMENT, REQUEST_MALFORMED.

After refusing oversized bodies the process hands the freed memory back to
the system (glibc's malloc_trim, once the burst is over): the bodies were
buffered whole before the check, and without it a burst of them stays in the
process's RSS (50 bodies of 1 MiB: +25 to 30 MiB for good).

The limits (docs/reliability.md): the methods anyone may call before signing in
(grpc.health.v1 and server reflection too, per request of a reflection stream)
accept MAX_ANONYMOUS_BYTES; CreateConcert, the one large request, accepts
MAX_CREATE_CONCERT_BYTES; every other method MAX_REQUEST_BYTES. gRPC's own
receive limit (server/app.py) is the largest of them, so nothing bigger is
even buffered.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError

from server.errors import (
    ErrorReason,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
)
from server.interceptors import Call, Layer, StreamProceed, UnaryProceed, UnreadableRequest

MAX_ANONYMOUS_BYTES = 4 * 1024
MAX_REQUEST_BYTES = 16 * 1024
MAX_CREATE_CONCERT_BYTES = 1024 * 1024
LARGEST_REQUEST_BYTES = MAX_CREATE_CONCERT_BYTES

ANONYMOUS_METHODS = frozenset(
    {
        "/concert.v1.AccountService/SignUp",
        "/concert.v1.AccountService/SignIn",
        "/concert.v1.QueueService/IssueToken",
    }
)


# grpcio's own services (grpc.health.v1, grpc.reflection.*): anyone may call them.
GRPC_SERVICES = "/grpc."


def request_limit(method: str) -> int:
    if method in ANONYMOUS_METHODS or method.startswith(GRPC_SERVICES):
        return MAX_ANONYMOUS_BYTES
    if method == "/concert.v1.AdminService/CreateConcert":
        return MAX_CREATE_CONCERT_BYTES
    return MAX_REQUEST_BYTES


def guarded_deserializer(
    method: str, deserialize: Callable[[bytes], Any] | None
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    limit = request_limit(method)

    def read(body: bytes) -> Any:
        if len(body) > limit:
            _TRIM.soon()
            return UnreadableRequest(
                ResourceExhausted(
                    ErrorReason.ERROR_REASON_REQUEST_TOO_LARGE,
                    f"the request is {len(body)} bytes; this method accepts at most {limit}",
                    metadata={"limit_bytes": str(limit)},
                )
            )
        try:
            return deserialize(body)
        except (DecodeError, ValueError, UnicodeDecodeError):
            # Which field is unknown (the parser stops at the first bad byte):
            # the violation names the whole body.
            problem = "does not decode: a string field that is not UTF-8, or a malformed body"
            return UnreadableRequest(
                InvalidArgument(
                    [FieldViolation("request", problem)],
                    reason=ErrorReason.ERROR_REASON_REQUEST_MALFORMED,
                )
            )

    return read


class RequestLimitLayer(Layer):
    """Answers an UnreadableRequest with its error; everything else passes.

    Applies to concert.v1 methods (the Layer default), where it answers before
    the credential checks; CallPipeline answers one for every other method."""

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        if isinstance(call.request, UnreadableRequest):
            self._refuse(call.request)
        return await proceed(call)

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        if isinstance(call.request, UnreadableRequest):
            self._refuse(call.request)
        async for item in proceed(call):
            yield item

    def _refuse(self, unreadable: UnreadableRequest) -> None:
        raise unreadable.error


class _MemoryTrim:
    """malloc_trim(0) once refusals stop for DELAY seconds, where the C library has it."""

    DELAY = 0.2

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        self._malloc_trim = getattr(libc, "malloc_trim", None)
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._malloc_trim is None:
            return
        try:
            loop = asyncio.get_running_loop()  # grpc.aio deserializes on its loop
        except RuntimeError:
            return
        if self._pending is not None:
            self._pending.cancel()  # still in the burst: wait for its end
        self._pending = loop.call_later(self.DELAY, self._run)

    def _run(self) -> None:
        self._pending = None
        assert self._malloc_trim is not None
        self._malloc_trim(0)


# One per process: the deserializers of every method and server share it.
_TRIM = _MemoryTrim()
