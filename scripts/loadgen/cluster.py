"""What a benchmark runs against: a PostgreSQL server, a fresh database, the server process.

Everything listens on loopback. The embedded PostgreSQL lives in a temporary
directory for the run and is stopped at the end; with CONCERT_DATABASE_URL the
run creates (and drops) its own databases on that server instead. Each server
is `python -m server` in its own process (with CONCERT_WORKERS it forks its
workers), and a sampler thread follows the peak RSS of its process tree.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from server.db.embedded import open_cluster

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
START_TIMEOUT_SECONDS = 90.0


@dataclass
class Postgres:
    url: str
    # The postmaster of the embedded cluster, to measure its CPU; None when external.
    pid: int | None = None

    def cpu_seconds(self) -> float:
        if self.pid is None:
            return 0.0
        try:
            root = psutil.Process(self.pid)
            return sum(_cpu(p) for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0.0


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


@contextmanager
def postgres(external_url: str | None) -> Iterator[Postgres]:
    """A PostgreSQL server for this run (embedded unless external_url)."""
    if external_url:
        yield Postgres(external_url)
        return
    with tempfile.TemporaryDirectory(prefix="concert-bench-pg-") as directory:
        cluster = open_cluster(Path(directory) / "pgdata")
        try:
            yield Postgres(cluster.url, cluster.postmaster_pid())
        finally:
            cluster.close()


@contextmanager
def fresh_database(server_url: str, synchronous_commit: str = "on") -> Iterator[str]:
    name = f"concert_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Sessions opened later inherit it (the server's pool does not override it).
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = {}").format(
                sql.Identifier(name), sql.Literal(synchronous_commit)
            )
        )
    conninfo = psycopg.conninfo.conninfo_to_dict(server_url)
    conninfo["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**conninfo)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MemorySamples:
    """Peak RSS of the server's process tree, sampled every `interval` seconds."""

    interval: float = 0.1
    samples: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    # (time, CPU seconds used so far by the server tree, by PostgreSQL)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)

    def cores(self, start: float, end: float) -> tuple[float, float]:
        """Cores the server and PostgreSQL kept busy on average between start and end."""
        inside = [c for c in self.cpu if start <= c[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return (float("nan"), float("nan"))
        first, last = inside[0], inside[-1]
        wall = last[0] - first[0]
        return ((last[1] - first[1]) / wall, (last[2] - first[2]) / wall)

    def _trees(self, start: float, end: float) -> list[dict[int, int]]:
        """The samples taken in [start, end]; a phase shorter than the sampling
        interval gets the last sample before its end instead of none."""
        inside = [tree for t, tree in self.samples if start <= t <= end]
        return inside or [tree for t, tree in self.samples if t <= end][-1:]

    def peak_per_process(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((rss for tree in self._trees(start, end) for rss in tree.values()), default=0)

    def peak_total(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((sum(tree.values()) for tree in self._trees(start, end)), default=0)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    address: str
    workers: int
    log_path: Path
    postgres: Postgres | None = None
    metrics_address: str | None = None  # HOST:PORT of its /metrics, with one worker
    memory: MemorySamples = field(default_factory=MemorySamples)
    _stop_sampling: threading.Event = field(default_factory=threading.Event)

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        pids = self.pids()
        return pids[1:] if self.workers > 1 else pids[:1]

    def _sample(self) -> None:
        while True:
            tree: dict[int, int] = {}
            cpu = 0.0
            for pid in self.pids():
                try:
                    process = psutil.Process(pid)
                    tree[pid] = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                cpu += _cpu(process)
            database_cpu = self.postgres.cpu_seconds() if self.postgres else 0.0
            now = time.monotonic()
            self.memory.samples.append((now, tree))
            self.memory.cpu.append((now, cpu, database_cpu))
            if self._stop_sampling.wait(self.memory.interval):
                return

    def stop(self) -> int:
        self._stop_sampling.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@contextmanager
def server(
    database_url: str,
    workers: int,
    out_dir: Path,
    postgres: Postgres | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """`python -m server` on a free loopback port, SERVING, stopped on exit."""
    address = f"127.0.0.1:{free_port()}"
    # The server's own figures (its event loop's lag) where one endpoint can
    # give them: several workers cannot share a metrics port.
    metrics_address = f"127.0.0.1:{free_port()}" if workers == 1 else None
    env = {
        **os.environ,
        "CONCERT_DATABASE_URL": database_url,
        "CONCERT_LISTEN": address,
        "CONCERT_WORKERS": str(workers),
        "CONCERT_ADMIN_KEY": ADMIN_KEY,
        "CONCERT_SEED_DEMO": "false",
        # The load generator plays a proxy on loopback: the junk storm names its
        # callers' addresses in x-forwarded-for (the per-address budgets).
        "CONCERT_TRUSTED_PROXIES": "127.0.0.1",
        "CONCERT_LOG_LEVEL": "WARNING",
        "CONCERT_SHUTDOWN_GRACE_SECONDS": "5",
        **({"CONCERT_METRICS_LISTEN": metrics_address} if metrics_address else {}),
        **(extra_env or {}),
    }
    log_path = out_dir / f"server-{address.rpartition(':')[2]}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C at the terminal reaches the orchestrator
            # only, which stops the server itself (SIGTERM, drain) on its way out.
            start_new_session=True,
        )
    running = ServerProcess(process, address, workers, log_path, postgres, metrics_address)
    try:
        _wait_serving(running)
        threading.Thread(target=running._sample, name="rss-sampler", daemon=True).start()
        yield running
    finally:
        code = running.stop()
        if code != 0:
            print(f"warning: server exited with {code}; see {log_path}", file=sys.stderr)


def _wait_serving(running: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {running.process.returncode}:\n"
                + running.log_path.read_text()[-3000:]
            )
        # Each worker prints this line once its gRPC server has started.
        started = running.log_path.read_text().count("concert.v1 listening on")
        if started >= running.workers and _serving(running.address):
            return
        time.sleep(0.2)
    running.process.kill()
    raise RuntimeError(f"server did not start within {START_TIMEOUT_SECONDS}s")


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING
