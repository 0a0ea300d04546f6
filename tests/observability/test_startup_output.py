"""With CONCERT_LOG_FORMAT=json, everything a server process writes is JSON lines.

A real `python -m server` against the test database, with tracing on (an OTLP
endpoint nobody listens on: nothing is exported, since no call is made): its
start, its listening line, its drain on SIGTERM. A bad setting is a JSON line too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from tests.support import free_port

START_TIMEOUT = 60.0


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("CONCERT_", "OTEL_"))
    }
    env.update(
        CONCERT_DATABASE_URL=database_url,
        CONCERT_LISTEN=f"127.0.0.1:{free_port()}",
        CONCERT_LOG_FORMAT="json",
        CONCERT_SEED_DEMO="false",
        CONCERT_SHUTDOWN_GRACE_SECONDS="1",
        **extra,
    )
    return env


def json_lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return entries


def test_a_json_server_writes_only_json_lines_from_start_to_stop(database_url: str) -> None:
    env = server_env(
        database_url,
        # Lifecycle lines show at any level; INFO shows the migrations' lines too.
        CONCERT_LOG_LEVEL="INFO",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr.append(line)
            if "concert.v1 listening on" in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not listening.wait(0.2):
            assert process.poll() is None, "".join(stderr)
            assert time.monotonic() < deadline, "no listening line:\n" + "".join(stderr)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # stderr is the reader thread's to drain
        assert process.stdout is not None
        stdout = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    assert process.returncode == 0, "".join(stderr)

    entries = json_lines("".join(stderr)) + json_lines(stdout)
    messages = [entry["message"] for entry in entries]
    (started,) = [entry for entry in entries if entry["message"].startswith("concert.v1 listening")]
    assert started["level"] == "INFO" and started["logger"] == "server.lifecycle"
    assert started["address"] == env["CONCERT_LISTEN"]
    assert started["tracing"] is True
    assert any(message.startswith("signal received: draining") for message in messages)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)


def test_lifecycle_lines_show_at_any_log_level(database_url: str) -> None:
    """The migrate command's report, at CONCERT_LOG_LEVEL=ERROR, is still there, as JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "server", "migrate"],
        env=server_env(database_url, CONCERT_LOG_LEVEL="ERROR"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json_lines(result.stderr + result.stdout)
    assert entry["message"] == "schema up to date"
    assert entry["logger"] == "server.lifecycle"


def test_a_bad_setting_is_one_json_line_and_exit_2() -> None:
    env = server_env("postgresql://unused", CONCERT_HOLD_TTL_SECONDS="soon")
    result = subprocess.run(
        [sys.executable, "-m", "server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    (entry,) = json_lines(result.stderr + result.stdout)
    assert entry["level"] == "ERROR"
    assert entry["message"].startswith("CONCERT_HOLD_TTL_SECONDS:")

    env = server_env("postgresql://unused", OTEL_TRACES_EXPORTER="zipkin")
    result = subprocess.run(
        [sys.executable, "-m", "server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    (entry,) = json_lines(result.stderr + result.stdout)
    assert entry["message"].startswith("OTEL_TRACES_EXPORTER:")
