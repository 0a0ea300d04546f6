"""Server interceptors, and the one mechanism they share: wrapping a handler.

grpc.aio interceptors see a method handler, not a call. To act per call
(check credentials, map errors), wrap_handler() swaps the handler's behaviour
for a wrapper that runs around it, for unary and server-streaming methods alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import psycopg
import psycopg_pool
from grpc.aio import ServicerContext

from server.errors import Internal, ServiceError, Unavailable, Unimplemented

log = logging.getLogger(__name__)

# A wrapper receives the call (request, context) and a `proceed` callable that
# runs the next layer. For streaming methods `proceed` returns an async iterator.
Wrapper = Callable[[Any, ServicerContext, Callable[[], Any]], Any]


# The services this codebase implements. Their streaming methods are async
# generators (never context.write), which is what wrap_handler expects.
OWN_PACKAGE = "concert.v1."


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    around_unary: Callable[[Any, ServicerContext, Callable[[], Awaitable[Any]]], Awaitable[Any]],
    around_stream: Callable[
        [Any, ServicerContext, Callable[[], AsyncIterator[Any]]], AsyncIterator[Any]
    ],
) -> grpc.RpcMethodHandler:
    """The same method handler with its behaviour run inside a wrapper."""
    if handler.unary_unary is not None:
        inner_unary: Any = handler.unary_unary

        async def unary(request: Any, context: ServicerContext) -> Any:
            return await around_unary(request, context, lambda: inner_unary(request, context))

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_stream: Any = handler.unary_stream

        async def stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            items = around_stream(request, context, lambda: inner_stream(request, context))
            async for item in items:
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # client-streaming methods: none in concert.v1


def method_service(method: str) -> str:
    """'/concert.v1.QueueService/IssueToken' -> 'concert.v1.QueueService'."""
    return method.lstrip("/").split("/", 1)[0]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Outermost layer: every failure leaves as a precise status, never UNKNOWN.

    ServiceError carries its own code; a lost or overloaded database is
    UNAVAILABLE (the client may retry); anything else is a bug, logged with its
    traceback and answered INTERNAL without internals.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method_service(method).startswith(OWN_PACKAGE):
            # Health and reflection come from grpcio and map their own errors.
            return handler

        async def around_unary(request: Any, context: ServicerContext, proceed: Any) -> Any:
            try:
                return await proceed()
            except Exception as exc:  # the one place that maps every failure
                await _abort(context, method, exc)

        async def around_stream(
            request: Any, context: ServicerContext, proceed: Any
        ) -> AsyncIterator[Any]:
            try:
                async for item in proceed():
                    yield item
            except Exception as exc:
                await _abort(context, method, exc)

        return wrap_handler(handler, around_unary, around_stream)


async def _abort(context: Any, method: str, exc: Exception) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    error = as_service_error(exc, method)
    await context.abort_with_status(error.to_status())


def as_service_error(exc: Exception, method: str = "") -> ServiceError:
    """The status a caller sees for any exception raised while serving."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, NotImplementedError):
        # The generated base servicer raises it for a method not built yet.
        return Unimplemented("UNIMPLEMENTED", f"{method} is not implemented")
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return Unavailable(
            "DATABASE_BUSY", "the database is busy; retry shortly", retry_after_seconds=1.0
        )
    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return Unavailable(
            "DATABASE_TIMEOUT",
            "the request timed out in the database; retry",
            retry_after_seconds=0.5,
        )
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return Unavailable(
            "DATABASE_CONFLICT", "a concurrent change conflicted; retry", retry_after_seconds=0.1
        )
    if isinstance(exc, psycopg.OperationalError):
        return Unavailable(
            "DATABASE_UNAVAILABLE", "the database is unavailable; retry", retry_after_seconds=1.0
        )
    log.exception("unexpected failure in %s", method, exc_info=exc)
    return Internal("INTERNAL", "internal error")
