"""Logging: one line per record, as text for people or JSON for log pipelines.

Every record made while serving a call carries that call's request id (see
request_id_var, set by the ObservabilityLayer): the caller's
`x-request-id` metadata when it sent a well-formed one, otherwise a fresh one.
When tracing is on (server/observability/tracing.py), a record made inside a
span also carries `trace_id` and `span_id` (hex, as trace backends show them),
so a log line leads to its trace and back.
Call metadata values are never logged: they carry tokens and keys.

The process's own lifecycle lines (listening, draining, a start that failed)
go through `lifecycle`, which logs at INFO whatever CONCERT_LOG_LEVEL says:
an operator and the tools that wait for a server always see them, in the
chosen format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry.trace import get_current_span

# The request id of the call being served by the current task (None outside calls).
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Start-up, shutdown and fatal start errors: shown at any CONCERT_LOG_LEVEL (a
# logger's own level decides; the root's level does not apply to it).
lifecycle = logging.getLogger("server.lifecycle")
lifecycle.setLevel(logging.INFO)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current call's request id ('-' outside calls),
    and with the current span's trace and span ids when a span is recording."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        span = get_current_span().get_span_context()
        if span.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Route the root logger to one stream handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler says "Running job" and "executed successfully" at INFO for
    # every run: the admission job runs every second. Its warnings (a missed
    # run, a job that raised) still show; server.jobs logs what a run did.
    logging.getLogger("apscheduler").setLevel(max(logging.getLevelName(level), logging.WARNING))


def fatal_start_error(message: str, log_format: str | None = None) -> None:
    """A start that failed, as one line on stderr: JSON when the log format is JSON.

    Used before logging is configured (the settings themselves may be what
    failed), so the format comes from CONCERT_LOG_FORMAT directly when unknown.
    """
    chosen = log_format or os.environ.get("CONCERT_LOG_FORMAT", "text").strip().lower()
    if chosen == "json":
        record = logging.LogRecord(lifecycle.name, logging.ERROR, "", 0, message, (), None)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)
