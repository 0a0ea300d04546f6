"""Real server processes for the end-to-end tests: `python -m server`, as deployed.

Each process gets its own free port, its log in a file (a pipe nobody reads
would fill and stall it), and is ready once its gRPC health check says
SERVING. Stopping sends SIGTERM (the graceful drain); `kill()` is kill -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import TEST_ADMIN_KEY, free_port, wait_until_serving

REPOSITORY = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60.0


@dataclass
class ServerProcess:
    """One `python -m server` child and where to reach it."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    metrics_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        wait_until_serving(
            self.address, alive=self.alive, output=lambda: self.log, timeout=timeout, name=self.name
        )

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; kill -9 if the drain does not end in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def kill(self) -> None:
        """kill -9: no drain, no cleanup; PostgreSQL notices the dropped connections."""
        self.process.kill()
        self.process.wait(10)


def start_server(
    name: str,
    database_url: str | None,
    log_dir: Path,
    *,
    with_metrics: bool = False,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> ServerProcess:
    """Start one server process (not waiting for it: see ServerProcess.wait_ready).

    database_url None: the embedded PostgreSQL, in extra_env's CONCERT_DATA_DIR.
    port: a given one (a restart where its clients expect it); None: a free one.
    """
    port = port or free_port()
    metrics_port = free_port() if with_metrics else None
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CONCERT_") or key == "CONCERT_TEST_DATABASE_URL"
    }
    env.update(
        {
            "CONCERT_LISTEN": f"127.0.0.1:{port}",
            "CONCERT_ADMIN_KEY": TEST_ADMIN_KEY,
            "CONCERT_SEED_DEMO": "false",
            # The cheapest scrypt cost the settings allow: sign-ups stay fast.
            "CONCERT_PASSWORD_HASH_COST": "10",
            "CONCERT_POOL_MIN_SIZE": "2",
            "CONCERT_POOL_MAX_SIZE": "10",
            "CONCERT_SHUTDOWN_GRACE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if database_url is not None:
        env["CONCERT_DATABASE_URL"] = database_url
    if metrics_port is not None:
        env["CONCERT_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
    env.update(extra_env or {})
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve"],
            cwd=REPOSITORY,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(name, port, log_path, process, metrics_port, env)
