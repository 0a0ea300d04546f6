"""Capturing what the server's loggers write, formatted as in production with JSON logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from server.observability.logs import JsonFormatter, RequestIdFilter


@contextmanager
def json_log_lines(logger_name: str) -> Iterator[io.StringIO]:
    """Every line the logger (and its children) writes within the block, as JSON,
    at DEBUG and up whatever the test run's logging says."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]
