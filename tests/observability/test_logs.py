"""Log lines: JSON or text by setting, with the call's request id, never its credentials."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest

from concert.v1 import admin_pb2
from server.config import ConfigError, Settings
from server.observability.logs import configure_logging, request_id_var
from tests.support import Stubs


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_json_lines_carry_level_logger_message_extras_and_exception(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("server.example")
    token = request_id_var.set("req-42")
    try:
        log.info("seat %s held", "A-1", extra={"seat": "A-1", "amount": 1500})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        request_id_var.reset(token)
    log.debug("below the level")
    log.warning("outside any call")

    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "seat A-1 held"
    assert first["level"] == "INFO"
    assert first["logger"] == "server.example"
    assert first["request_id"] == "req-42"
    assert (first["seat"], first["amount"]) == ("A-1", 1500)
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in second["exception"]
    assert "request_id" not in third


def test_text_lines_show_the_request_id(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    token = request_id_var.set("req-7")
    try:
        logging.getLogger("server.example").info("hello")
    finally:
        request_id_var.reset(token)
    logging.getLogger("server.example").info("outside")
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("INFO server.example [req-7] hello")
    assert outside.endswith("INFO server.example [-] outside")


async def test_a_served_call_logs_one_json_line_with_its_request_id(
    stubs: Stubs, root_logging: None
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    wrong_key = "Bearer a-wrong-operator-key-that-must-stay-secret"
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.admin.GetQueueStats(
            admin_pb2.GetQueueStatsRequest(),
            metadata=(("x-request-id", "req-admin-1"), ("authorization", wrong_key)),
        )
    # grpc.aio sends an aborted call's status before the handler's task unwinds
    # through the observability layer, so the call's line may land just after
    # the client has its answer.
    for _ in range(250):
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        ours = [line for line in lines if line.get("request_id") == "req-admin-1"]
        if ours:
            break
        await asyncio.sleep(0.02)
    (call,) = ours
    assert call["rpc"] == "/concert.v1.AdminService/GetQueueStats"
    assert call["code"] == "PERMISSION_DENIED"
    assert "must-stay-secret" not in stream.getvalue()


def test_log_format_and_metrics_settings_are_validated() -> None:
    assert Settings.from_env({"CONCERT_LOG_FORMAT": "JSON"}).log_format == "json"
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({}).metrics_listen is None
    listen = Settings.from_env({"CONCERT_METRICS_LISTEN": "0.0.0.0:9090"}).metrics_listen
    assert listen == "0.0.0.0:9090"
    with pytest.raises(ConfigError, match="CONCERT_LOG_FORMAT"):
        Settings.from_env({"CONCERT_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="CONCERT_METRICS_LISTEN"):
        Settings.from_env({"CONCERT_METRICS_LISTEN": "9090"})
    with pytest.raises(ConfigError, match="CONCERT_METRICS_LISTEN"):
        Settings.from_env({"CONCERT_METRICS_LISTEN": "0.0.0.0:9090", "CONCERT_WORKERS": "2"})
