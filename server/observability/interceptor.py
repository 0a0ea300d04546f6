"""The outermost layer: request id, call metrics and the per-call log line.

It sits OUTSIDE the ErrorLayer so it sees the status the caller gets:
a handler's failure has already become the status set on the context (the
handler returns; server/interceptors.end_with) by the time it passes here, and
a call refused before its handler ran (an unreadable request) raises AbortError.
A cancelled call is CANCELLED, or DEADLINE_EXCEEDED when its deadline passed.

The request id is the caller's `x-request-id` metadata when it is well formed
(1 to 128 of A-Za-z0-9._:/+=@-; a correlation id for logs, unrelated to the
AIP-155 `request_id` fields), otherwise a fresh UUID. It is held in a context
variable for the call's task, so every log record made while serving the call
carries it, and it goes back to the caller as `x-request-id` in the trailing
metadata, which leave with the status: no extra send per call (an echo in the
initial metadata cost each call a message of its own, about a fifth more
server CPU for a small call). A refused or failed call carries it too: the
ErrorLayer's abort keeps the trailing metadata already set
(server/interceptors.py).

With tracing on, the call's span (opened by the tracing interceptor outside
this layer) gets the request id and the status code the caller saw, and an
ERROR status for the server-side codes below: the ErrorLayer answers through
abort_with_status, which the tracing interceptor does not see.

grpcio's own streaming services (health Watch, reflection) write through
context.write, which the pipeline's stream wrapper does not support: they are not observed.
Their unary methods (health Check, the probes' target) are.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc.aio import ServicerContext
from opentelemetry.trace import Status, StatusCode, get_current_span

from server.interceptors import Call, Layer, MethodInfo, StreamProceed, UnaryProceed
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


class ObservabilityLayer(Layer):
    """Outermost: every unary method (grpcio's too) and concert.v1's streams."""

    def __init__(self, metrics: Metrics) -> None:
        self._observe = _CallObserver(metrics)

    def applies_to(self, info: MethodInfo) -> bool:
        return info.kind == "unary" or info.own

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        request_id = request_id_from(call.metadata())
        token = request_id_var.set(request_id)
        labels = call.info.labels
        started = self._observe.start(labels)
        code = grpc.StatusCode.UNKNOWN  # an exception grpcio maps itself
        try:
            _echo(call.context, request_id)
            response = await proceed(call)
            code = _code(call.context) or grpc.StatusCode.OK
            return response
        except grpc.aio.AbortError:
            code = _code(call.context) or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = _cancelled_code(call.context)
            raise
        finally:
            self._observe.finish(labels, call.info.method, code, started)
            _mark_span(request_id, code)
            request_id_var.reset(token)

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        # The call's task runs this generator to the end: no reset needed.
        request_id = request_id_from(call.metadata())
        request_id_var.set(request_id)
        labels = call.info.labels
        started = self._observe.start(labels)
        code = grpc.StatusCode.UNKNOWN
        try:
            _echo(call.context, request_id)
            async for item in proceed(call):
                yield item
            code = _code(call.context) or grpc.StatusCode.OK
        except grpc.aio.AbortError:
            code = _code(call.context) or grpc.StatusCode.UNKNOWN
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = _cancelled_code(call.context)
            raise
        finally:
            self._observe.finish(labels, call.info.method, code, started)
            _mark_span(request_id, code)


def _echo(context: ServicerContext, request_id: str) -> None:
    context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))


def _mark_span(request_id: str, code: grpc.StatusCode) -> None:
    """The call's span, when tracing records one: its request id and final status."""
    span = get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("concert.request_id", request_id)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_SIDE_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))


class _CallObserver:
    """The call metrics, with each label set's metric children looked up once.

    prometheus_client's labels() takes a lock and builds a key on every call;
    the children for a method (and code) never change, so they are kept.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started: dict[tuple[str, str, str], Any] = {}
        self._seconds: dict[tuple[str, str, str], Any] = {}
        self._handled: dict[tuple[tuple[str, str, str], grpc.StatusCode], Any] = {}

    def start(self, labels: tuple[str, str, str]) -> float:
        started = self._started.get(labels)
        if started is None:
            started = self._started[labels] = self._metrics.rpc_started.labels(*labels)
        started.inc()
        return time.perf_counter()

    def finish(
        self, labels: tuple[str, str, str], method: str, code: grpc.StatusCode, started: float
    ) -> None:
        seconds = time.perf_counter() - started
        handled = self._handled.get((labels, code))
        if handled is None:
            handled = self._metrics.rpc_handled.labels(*labels, code.name)
            self._handled[(labels, code)] = handled
        handled.inc()
        histogram = self._seconds.get(labels)
        if histogram is None:
            histogram = self._seconds[labels] = self._metrics.rpc_seconds.labels(*labels)
        histogram.observe(seconds)
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
