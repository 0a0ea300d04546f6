"""Tracing with OpenTelemetry: a span per concert.v1 call, a child span per SQL statement.

Off unless the standard OTEL_* variables ask for it (tracing_env.py says
when), and then free: no tracer provider, no interceptor, no instrumented
connection, and this module is not even imported. When on, the exporter
speaks OTLP over gRPC and reads its own variables (endpoint, headers,
certificates, timeout, compression); the SDK reads OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) and the OTEL_BSP_* batch
settings.

The pieces are the maintained instrumentations, wired to this App's provider
rather than patched in globally (several Apps share a process in the tests):

- opentelemetry-instrumentation-grpc's grpc.aio server interceptor, outermost,
  for the concert.v1 services only: grpcio's own streaming services (health
  Watch, reflection) write through context.write, which its stream wrapper
  cannot run around, and health probes would bury the calls in traces. It
  continues a caller's trace (W3C `traceparent` metadata).
- opentelemetry-instrumentation-psycopg's `instrument_connection`, applied to
  every connection the pools open (psycopg_pool's `configure`): each execute
  on a psycopg AsyncConnection or AsyncCursor is a CLIENT span with the
  statement text (parameters are never recorded).

SQL outside a call (the scheduled jobs, the readiness probe's ping, the
scrape-time gauges, the queue's LISTEN connection) would start a trace per
statement, several a second per process: a root CLIENT span is not sampled
(RootSqlDropped); everything else follows the configured sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import SpanKind, get_current_span
from psycopg import AsyncConnection

# Only these services get a span per call (see the module docstring).
TRACED_PACKAGE = "/concert.v1."
DEFAULT_SERVICE_NAME = "concert-reservation"


class Tracing:
    """One App's tracer provider and the instrumentation bound to it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    @classmethod
    def exporting_over_otlp(cls) -> Tracing:
        """Batches of spans to the collector the OTEL_EXPORTER_OTLP_* variables name."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return cls.with_processors([BatchSpanProcessor(OTLPSpanExporter())])

    @classmethod
    def with_processors(
        cls, processors: Sequence[SpanProcessor], sampler: Sampler | None = None
    ) -> Tracing:
        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
        # when neither names the service, it is this one rather than "unknown_service".
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(
            resource=resource,
            sampler=RootSqlDropped(sampler or _get_from_env_or_default()),
        )
        for processor in processors:
            provider.add_span_processor(processor)
        return cls(provider)

    @classmethod
    def with_exporter(cls, exporter: SpanExporter) -> Tracing:
        """Every span handed to `exporter` as it ends (tests: an in-memory exporter)."""
        return cls.with_processors([SimpleSpanProcessor(exporter)], sampler=ALWAYS_ON)

    def server_interceptor(self) -> grpc.aio.ServerInterceptor:
        def traced(details: Any) -> bool:
            return str(details.method).startswith(TRACED_PACKAGE)

        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(
            tracer_provider=self.provider, filter_=traced
        )
        return interceptor

    async def instrument_connection(self, conn: AsyncConnection[Any]) -> None:
        """psycopg_pool's `configure` callback: trace every statement on `conn`."""
        PsycopgInstrumentor.instrument_connection(conn, tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Export what is still buffered (bounded by OTEL_BSP_EXPORT_TIMEOUT), then stop."""
        self.provider.shutdown()


class RootSqlDropped(Sampler):
    """Drops root CLIENT spans (SQL outside any call); asks `delegate` about every other span."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if kind == SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RootSqlDropped{{{self._delegate.get_description()}}}"
