"""Each worker labels its log lines, in text and in JSON alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from server.observability.logs import configure_logging
from server.workers import _label_logs


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_stay_json_and_carry_the_worker() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    _label_logs(3)
    logging.getLogger("server.test").info("hello")
    entry = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert entry["message"] == "hello"
    assert entry["worker"] == 3


@pytest.mark.usefixtures("restore_root_logger")
def test_text_logs_name_the_worker() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    _label_logs(2)
    logging.getLogger("server.test").info("hello")
    assert " w2[" in stream.getvalue()
