"""Tracing: one Pay is one trace, its RPC span with the SQL it ran; off means off.

The App is built with an in-memory exporter (Tracing.with_exporter), the way
production builds it with the OTLP one; the spans come from the maintained
grpc.aio and psycopg instrumentations running against real PostgreSQL.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from concert.v1 import payment_pb2, reservation_pb2, wallet_pb2
from server.app import App, build_app
from server.clock import FakeClock
from server.config import ConfigError, Settings
from server.observability.tracing import Tracing
from server.observability.tracing_env import TracingConfig
from tests.booking.helpers import concert_request
from tests.conftest import empty_tables
from tests.fans import admitted_fan
from tests.observability.json_logs import json_log_lines
from tests.support import ADMIN, Stubs

PAY = "/concert.v1.PaymentService/Pay"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def app(
    database_url: str, settings: Settings, clock: FakeClock, exporter: InMemorySpanExporter
) -> AsyncIterator[App]:
    """The conftest App, traced into `exporter`."""
    await empty_tables(database_url)
    tracing = Tracing.with_exporter(exporter)
    application = await build_app(
        settings, database_url=database_url, clock=clock, start_jobs=False, tracing=tracing
    )
    await application.start()
    try:
        yield application
    finally:
        await application.stop(grace=0.5)
        tracing.shutdown()


@pytest.fixture
def call_log() -> Iterator[io.StringIO]:
    """The per-call log lines, as JSON, whatever the test run's logging says."""
    with json_log_lines("server.observability.interceptor") as stream:
        yield stream


def statement(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("db.statement") or attributes.get("db.query.text") or "")


async def test_one_pay_is_one_trace_holding_its_rpc_span_and_its_sql(
    app: App, stubs: Stubs, exporter: InMemorySpanExporter, call_log: io.StringIO
) -> None:
    concert = await stubs.admin.CreateConcert(
        concert_request(app.ctx, seats=2, price=20_000), metadata=ADMIN
    )
    fan = await admitted_fan(stubs)
    await stubs.wallet.Charge(
        wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=50_000), metadata=ADMIN
    )
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
        metadata=fan.metadata,
    )
    exporter.clear()
    call_log.truncate(0)
    call_log.seek(0)

    await stubs.payment.Pay(
        payment_pb2.PayRequest(
            reservation_id=held.reservation.reservation_id, request_id=str(uuid.uuid4())
        ),
        metadata=(*fan.metadata, ("x-request-id", "pay-trace-1")),
    )

    spans = exporter.get_finished_spans()
    (rpc,) = [span for span in spans if span.kind == SpanKind.SERVER]
    assert rpc.name == PAY
    assert rpc.context is not None
    trace_id = rpc.context.trace_id
    # Everything recorded during the Pay belongs to its one trace (SQL outside a
    # call, such as the readiness probe's, is not sampled at all).
    assert {span.context.trace_id for span in spans if span.context} == {trace_id}
    attributes = rpc.attributes or {}
    assert attributes["concert.request_id"] == "pay-trace-1"
    assert attributes["rpc.grpc.status_code"] == 0
    assert rpc.status.status_code != StatusCode.ERROR

    sql = [span for span in spans if span.kind == SpanKind.CLIENT]
    assert sql, "the Pay ran no traced SQL"
    for span in sql:
        assert span.parent is not None and span.parent.span_id == rpc.context.span_id
        assert statement(span), f"{span.name} has no statement"
        assert (span.attributes or {}).get("db.system") == "postgresql"
    statements = " ".join(statement(span) for span in sql)
    # The sale itself: the seat changes hands and the payment is written.
    assert "seats" in statements and "payments" in statements

    # The call's log line names the trace and the RPC span.
    (line,) = [json.loads(text) for text in call_log.getvalue().splitlines()]
    assert line["rpc"] == PAY and line["request_id"] == "pay-trace-1"
    assert line["trace_id"] == format(trace_id, "032x")
    assert line["span_id"] == format(rpc.context.span_id, "016x")


async def test_a_server_side_failure_marks_the_rpc_span_as_an_error(
    app: App, stubs: Stubs, exporter: InMemorySpanExporter
) -> None:
    fan = await admitted_fan(stubs)
    exporter.clear()
    async with app.ctx.pool.connection() as conn:
        # The wallet's table gone for a moment: the next read fails in SQL (INTERNAL).
        await conn.execute("ALTER TABLE wallets RENAME TO wallets_away")
    try:
        with pytest.raises(Exception) as failed:
            await stubs.wallet.GetBalance(
                wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=fan.session_metadata
            )
    finally:
        async with app.ctx.pool.connection() as conn:
            await conn.execute("ALTER TABLE wallets_away RENAME TO wallets")
    assert "INTERNAL" in str(failed.value)
    (rpc,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert rpc.status.status_code == StatusCode.ERROR
    assert (rpc.attributes or {})["rpc.grpc.status_code"] == 13  # INTERNAL
    failed_sql = [
        s
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.CLIENT and s.status.status_code == StatusCode.ERROR
    ]
    assert failed_sql, "the failing statement's span does not show the failure"


async def test_without_otel_variables_nothing_is_traced(database_url: str, settings: Settings):
    """The conftest App, as production builds it with no OTEL_* set: no provider at all."""
    config = TracingConfig.from_env({})
    assert not config.enabled and config.start() is None
    await empty_tables(database_url)
    app = await build_app(settings, database_url=database_url, start_jobs=False)
    try:
        assert app.tracing is None
        async with app.ctx.pool.connection() as conn:
            assert conn.cursor_factory is psycopg.AsyncCursor
    finally:
        await app.stop(grace=0)


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, True),
    ],
)
def test_the_standard_variables_turn_tracing_on_and_off(
    environ: dict[str, str], enabled: bool
) -> None:
    assert TracingConfig.from_env(environ).enabled is enabled


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_what_cannot_be_exported_is_a_configuration_error(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        TracingConfig.from_env(environ)
