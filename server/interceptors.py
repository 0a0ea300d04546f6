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
touch them decline in applies_to.

A request deserializer that raises fails the call with UNKNOWN and an ERROR
traceback in grpcio's log (measured, grpcio 1.85; raising AbortError there is
no better: grpcio only accepts the one context.abort raised). So with a
`guard_deserializer` (server/security/request_limits.py) the deserializer of
EVERY method, of every kind, never raises: an oversized or undecodable body
becomes an UnreadableRequest, and the pipeline itself answers it with its
error (INVALID_ARGUMENT or RESOURCE_EXHAUSTED, with an ErrorInfo) before the
method's handler sees it: innermost, after the layers that apply (a layer may
answer earlier, as RequestLimitLayer does before the credential checks), or,
for a method no layer applies to and for every request of a client stream
(reflection), in a thin wrapper of the same shape as the handler (a coroutine
for a handler that writes through context.write, an async generator for one
that yields). Without a guard, a method no layer applies to is served by its
own handler untouched.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import psycopg
import psycopg_pool
from grpc.aio import ServicerContext

from server.errors import (
    ERROR_DOMAIN,
    ErrorReason,
    Internal,
    ServiceError,
    Unavailable,
    Unimplemented,
)

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


class UnreadableRequest:
    """What a guarded deserializer makes of a body it could not read: the error to answer."""

    __slots__ = ("error",)

    def __init__(self, error: ServiceError) -> None:
        self.error = error


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
        error_domain: str = ERROR_DOMAIN,
    ) -> None:
        self._layers = tuple(layers)
        # Wraps every method's request deserializer (for the size and decoding
        # checks of server/security/request_limits.py); None: no guard.
        self._guard = guard_deserializer
        # The ErrorInfo domain of the pipeline's own answers (unreadable requests).
        self._domain = error_domain
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
        guard = self._guard
        if handler.unary_unary is not None:
            info = MethodInfo(method, "unary")
            layers = [layer for layer in self._layers if layer.applies_to(info)]
            if not layers and guard is None:
                return handler
            inner_unary: Any = handler.unary_unary
            chain: UnaryProceed = functools.partial(self._innermost, inner_unary)
            for layer in reversed(layers):
                chain = functools.partial(layer.around, proceed=chain)
            unary_chain = chain

            async def unary(request: Any, context: ServicerContext) -> Any:
                return await unary_chain(Call(info, request, context))

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=self._deserializer(method, handler),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            info = MethodInfo(method, "server_stream")
            layers = [layer for layer in self._layers if layer.applies_to(info)]
            if not layers and guard is None:
                return handler
            inner_stream: Any = handler.unary_stream
            if not layers and not inspect.isasyncgenfunction(inner_stream):
                # grpcio's Watch: writes through context.write, returns None.
                return grpc.unary_stream_rpc_method_handler(
                    self._checked_coroutine(inner_stream),
                    request_deserializer=self._deserializer(method, handler),
                    response_serializer=handler.response_serializer,
                )
            stream_chain: StreamProceed = functools.partial(self._innermost_stream, inner_stream)
            for layer in reversed(layers):
                stream_chain = functools.partial(layer.around_stream, proceed=stream_chain)
            outer_stream = stream_chain

            async def stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
                async for item in outer_stream(Call(info, request, context)):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=self._deserializer(method, handler),
                response_serializer=handler.response_serializer,
            )
        # Client streams (reflection's bidi stream; none in concert.v1): no
        # layers, each request checked as the handler reads it.
        if guard is None:
            return handler
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._checked_requests(handler.stream_stream),
                request_deserializer=self._deserializer(method, handler),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._checked_requests(handler.stream_unary),
                request_deserializer=self._deserializer(method, handler),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _deserializer(self, method: str, handler: grpc.RpcMethodHandler) -> Deserializer:
        if self._guard is None:
            return handler.request_deserializer
        return self._guard(method, handler.request_deserializer)

    async def _refuse_unreadable(self, request: Any, context: ServicerContext) -> None:
        if isinstance(request, UnreadableRequest):
            await _abort_with(context, request.error.to_status(self._domain))

    async def _innermost(self, inner: Any, call: Call) -> Any:
        await self._refuse_unreadable(call.request, call.context)
        return await inner(call.request, call.context)

    async def _innermost_stream(self, inner: Any, call: Call) -> AsyncIterator[Any]:
        await self._refuse_unreadable(call.request, call.context)
        async for item in inner(call.request, call.context):
            yield item

    def _checked_coroutine(self, inner: Any) -> Callable[[Any, ServicerContext], Awaitable[Any]]:
        async def checked(request: Any, context: ServicerContext) -> Any:
            await self._refuse_unreadable(request, context)
            return await inner(request, context)

        return checked

    def _checked_requests(self, inner: Any) -> Callable[[Any, ServicerContext], Any]:
        """A client-streaming handler whose request iterator answers an unreadable request."""
        refuse = self._refuse_unreadable

        async def requests_of(iterator: Any, context: ServicerContext) -> AsyncIterator[Any]:
            async for request in iterator:
                await refuse(request, context)
                yield request

        if inspect.isasyncgenfunction(inner):

            async def replies(iterator: Any, context: ServicerContext) -> AsyncIterator[Any]:
                async for item in inner(requests_of(iterator, context), context):
                    yield item

            return replies

        async def reply(iterator: Any, context: ServicerContext) -> Any:
            return await inner(requests_of(iterator, context), context)

        return reply


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
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # the one place that maps every failure
            end_with_error(call.context, call.info.method, exc)
            return None

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        try:
            async for item in proceed(call):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            end_with_error(call.context, call.info.method, exc)


def end_with_error(context: Any, method: str, exc: Exception, domain: str = ERROR_DOMAIN) -> None:
    """end_with the status a caller sees for `exc` (as_service_error), in `domain`."""
    end_with(context, as_service_error(exc, method).to_status(domain))


def end_with(context: Any, status: grpc.Status) -> None:
    """Make `status` the call's outcome once its handler returns, without raising.

    context.abort would raise an AbortError that grpcio keeps on the call's
    state, whose traceback holds the frames it passed and they the call's
    state: a reference cycle, with the refused call's own exception, its
    traceback and every local along the way, that only Python's cyclic
    collector frees. A storm of refusals made 20-40 ms collections of them
    every few seconds, each one stalling the event loop and every call waiting
    on it (docs/load-test-report.md, Round 12). The handler returning None
    instead, grpcio sends the status (after an empty message, for a unary
    method; clients discard it with a status other than OK).
    """
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(_with_kept_metadata(context, status))


async def _abort_with(context: Any, status: grpc.Status) -> None:
    """Answer `status` and stop the handler now (where returning cannot stop it)."""
    await context.abort(status.code, status.details, _with_kept_metadata(context, status))


def _with_kept_metadata(context: Any, status: grpc.Status) -> tuple[Any, ...]:
    # The status's metadata would replace what the call set before (the request
    # id the observability layer echoes): send both.
    return tuple(context.trailing_metadata() or ()) + tuple(status.trailing_metadata)


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
