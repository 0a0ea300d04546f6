"""The one server interceptor: a pipeline of per-call layers, built once per method.

Each concern (observability, error mapping, the operator's key, the queue
gate, the text check) lives in its own module as a `Layer`: it says which
methods it applies to and runs `around(call, proceed)` for each call of them.
`CallPipeline` is the only grpc.aio interceptor the server installs. grpc.aio
runs every interceptor's intercept_service for every call, and a handler that
acts per call had to be rebuilt per call; with one interceptor the wrapped
handler of a method is built the first time the method is called and reused
(the continuation hands back the same handler object per method), so a call
costs one dictionary lookup plus the layers that apply to it. Per-call data,
such as metadata, is read from the call's ServicerContext inside the layers.

grpcio's own streaming services (health Watch, reflection) write through
context.write, which the stream wrapper cannot run around: layers that may
touch them decline in applies_to, and a method no layer applies to is served
by its own handler untouched.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import psycopg
import psycopg_pool
from grpc.aio import ServicerContext

from server.errors import ErrorReason, Internal, ServiceError, Unavailable, Unimplemented

log = logging.getLogger(__name__)

# The services this codebase implements. Their streaming methods are async
# generators (never context.write), which is what the stream wrapper expects.
OWN_PACKAGE = "concert.v1."


class MethodInfo:
    """What is known about a method before any call: its names and kind."""

    __slots__ = ("kind", "labels", "method", "name", "service")

    def __init__(self, method: str, kind: str) -> None:
        self.method = method  # '/concert.v1.QueueService/IssueToken'
        self.service, _, self.name = method.lstrip("/").partition("/")
        self.kind = kind  # 'unary' or 'server_stream'
        self.labels = (kind, self.service, self.name)  # of the call metrics

    @property
    def own(self) -> bool:
        return self.service.startswith(OWN_PACKAGE)


class Call:
    """One call as the layers see it."""

    __slots__ = ("context", "info", "request")

    def __init__(self, info: MethodInfo, request: Any, context: ServicerContext) -> None:
        self.info = info
        self.request = request
        self.context = context

    @property
    def method(self) -> str:
        return self.info.method

    def metadata(self) -> Any:
        """The caller's metadata (key/value pairs)."""
        return self.context.invocation_metadata()


UnaryProceed = Callable[[Call], Awaitable[Any]]
StreamProceed = Callable[[Call], AsyncIterator[Any]]
Deserializer = Callable[[bytes], Any] | None
DeserializerGuard = Callable[[str, Deserializer], Deserializer]


class Layer:
    """One concern around the calls of the methods it applies to.

    By default a layer applies to the concert.v1 methods and does nothing;
    subclasses override what they need. `proceed(call)` runs the next layer.
    """

    def applies_to(self, info: MethodInfo) -> bool:
        return info.own

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        return await proceed(call)

    def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        return proceed(call)


class CallPipeline(grpc.aio.ServerInterceptor):
    """The layers, outermost first, as one interceptor with a handler cache per method."""

    def __init__(
        self,
        layers: Sequence[Layer],
        guard_deserializer: DeserializerGuard | None = None,
    ) -> None:
        self._layers = tuple(layers)
        # Wraps each wrapped method's request deserializer (for the size and
        # decoding checks of server/security/request_limits.py).
        self._guard = guard_deserializer or (lambda method, deserialize: deserialize)
        # method -> (the continuation's handler, the wrapped handler built from it)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpcio answers UNIMPLEMENTED itself
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The method's handler with the layers that apply to it run around each call."""
        if handler.unary_unary is not None:
            info = MethodInfo(method, "unary")
            layers = [layer for layer in self._layers if layer.applies_to(info)]
            if not layers:
                return handler
            inner_unary: Any = handler.unary_unary
            chain: UnaryProceed = lambda call: inner_unary(call.request, call.context)  # noqa: E731
            for layer in reversed(layers):
                chain = functools.partial(layer.around, proceed=chain)
            unary_chain = chain

            async def unary(request: Any, context: ServicerContext) -> Any:
                return await unary_chain(Call(info, request, context))

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=self._guard(method, handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            info = MethodInfo(method, "server_stream")
            layers = [layer for layer in self._layers if layer.applies_to(info)]
            if not layers:
                return handler
            inner_stream: Any = handler.unary_stream
            stream_chain: StreamProceed = lambda call: inner_stream(call.request, call.context)  # noqa: E731
            for layer in reversed(layers):
                stream_chain = functools.partial(layer.around_stream, proceed=stream_chain)
            outer_stream = stream_chain

            async def stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
                async for item in outer_stream(Call(info, request, context)):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=self._guard(method, handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming methods: none in concert.v1


class ErrorLayer(Layer):
    """Every failure of the layers inside it leaves as a precise status, never UNKNOWN.

    ServiceError carries its own code; a lost or overloaded database is
    UNAVAILABLE (the client may retry); anything else is a bug, logged with its
    traceback and answered INTERNAL without internals. Health and reflection
    come from grpcio and map their own errors (applies to concert.v1 only).
    """

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        try:
            return await proceed(call)
        except Exception as exc:  # the one place that maps every failure
            await _abort(call.context, call.info.method, exc)

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        try:
            async for item in proceed(call):
                yield item
        except Exception as exc:
            await _abort(call.context, call.info.method, exc)


async def _abort(context: Any, method: str, exc: Exception) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    error = as_service_error(exc, method)
    status = error.to_status()
    # An abort's metadata replace what the call set before (the request id the
    # observability layer echoes): send both.
    kept = tuple(context.trailing_metadata() or ())
    await context.abort(status.code, status.details, kept + tuple(status.trailing_metadata))


def as_service_error(exc: Exception, method: str = "") -> ServiceError:
    """The status a caller sees for any exception raised while serving."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, NotImplementedError):
        # The generated base servicer raises it for a method not built yet.
        return Unimplemented(ErrorReason.ERROR_REASON_UNIMPLEMENTED, f"{method} is not implemented")
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return Unavailable(
            ErrorReason.ERROR_REASON_DATABASE_BUSY,
            "the database is busy; retry shortly",
            retry_after_seconds=1.0,
        )
    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return Unavailable(
            ErrorReason.ERROR_REASON_DATABASE_TIMEOUT,
            "the request timed out in the database; retry",
            retry_after_seconds=0.5,
        )
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return Unavailable(
            ErrorReason.ERROR_REASON_DATABASE_CONFLICT,
            "a concurrent change conflicted; retry",
            retry_after_seconds=0.1,
        )
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(
            ErrorReason.ERROR_REASON_DATABASE_UNAVAILABLE,
            "the database is unavailable; retry",
            retry_after_seconds=1.0,
        )
    log.exception("unexpected failure in %s", method, exc_info=exc)
    return Internal(ErrorReason.ERROR_REASON_INTERNAL, "internal error")
