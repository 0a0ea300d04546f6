"""The outermost interceptor: request id, call metrics and the per-call log line.

It sits OUTSIDE the ErrorInterceptor so it sees the status the caller gets:
a handler's failure has already become `context.abort_with_status(...)` by the
time it passes here, which raises AbortError with the code set on the context.
A cancelled call is CANCELLED, or DEADLINE_EXCEEDED when its deadline passed.

The request id is the caller's `x-request-id` metadata when it is well formed
(a correlation id for logs; unrelated to the AIP-155 `request_id` fields),
otherwise a fresh UUID. It is held in a context variable for the call's task,
so every log record made while serving the call carries it.

grpcio's own streaming services (health Watch, reflection) write through
context.write, which wrap_handler does not support: they are not observed.
Their unary methods (health Check, the probes' target) are.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from server.interceptors import OWN_PACKAGE, method_service, wrap_handler
from server.observability.logs import request_id_var
from server.observability.metrics import Metrics

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

# Codes that mean the service, not the caller, has a problem: logged as warnings.
# Everything else is one DEBUG line per call (metrics carry the volumes).
_SERVER_SIDE_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def request_id_from(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            if _WELL_FORMED_REQUEST_ID.fullmatch(value):
                return value
            break
    return str(uuid.uuid4())


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._observe = _CallObserver(metrics)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpcio answers UNIMPLEMENTED itself
        method = handler_call_details.method
        own = method_service(method).startswith(OWN_PACKAGE)
        if handler.unary_unary is None and not (own and handler.unary_stream is not None):
            return handler
        service, _, name = method.lstrip("/").partition("/")
        labels = ("unary" if handler.unary_unary is not None else "server_stream", service, name)
        request_id = request_id_from(handler_call_details.invocation_metadata)
        observe = self._observe

        async def around_unary(request: Any, context: ServicerContext, proceed: Any) -> Any:
            token = request_id_var.set(request_id)
            started = observe.start(labels)
            code = grpc.StatusCode.UNKNOWN  # an exception grpcio maps itself
            try:
                response = await proceed()
                code = _code(context) or grpc.StatusCode.OK
                return response
            except grpc.aio.AbortError:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            finally:
                observe.finish(labels, method, code, started)
                request_id_var.reset(token)

        async def around_stream(
            request: Any, context: ServicerContext, proceed: Any
        ) -> AsyncIterator[Any]:
            # The call's task runs this generator to the end: no reset needed.
            request_id_var.set(request_id)
            started = observe.start(labels)
            code = grpc.StatusCode.UNKNOWN
            try:
                async for item in proceed():
                    yield item
                code = _code(context) or grpc.StatusCode.OK
            except grpc.aio.AbortError:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = _cancelled_code(context)
                raise
            finally:
                observe.finish(labels, method, code, started)

        return wrap_handler(handler, around_unary, around_stream)


class _CallObserver:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def start(self, labels: tuple[str, str, str]) -> float:
        self._metrics.rpc_started.labels(*labels).inc()
        return time.perf_counter()

    def finish(
        self, labels: tuple[str, str, str], method: str, code: grpc.StatusCode, started: float
    ) -> None:
        seconds = time.perf_counter() - started
        self._metrics.rpc_handled.labels(*labels, code.name).inc()
        self._metrics.rpc_seconds.labels(*labels).observe(seconds)
        level = logging.WARNING if code in _SERVER_SIDE_CODES else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s %.1fms",
                method,
                code.name,
                seconds * 1000,
                extra={"rpc": method, "code": code.name, "duration_ms": round(seconds * 1000, 3)},
            )


def _code(context: ServicerContext) -> grpc.StatusCode | None:
    code = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:  # some grpcio versions hand back the integer
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


def _cancelled_code(context: ServicerContext) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
