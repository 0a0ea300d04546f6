"""Prometheus metrics: one registry per App, served over HTTP when configured.

What is measured (names follow the grpc-ecosystem conventions, so stock
dashboards and alerts for gRPC servers work unchanged):

- grpc_server_started_total{grpc_type, grpc_service, grpc_method}
- grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
  one per finished call, by the status code the caller saw
- grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}
  latency histogram (for server-streaming calls: how long the stream lasted)
- concert_db_pool_{min,max,size,available}_connections, concert_db_pool_requests_waiting,
  concert_db_pool_requests_total, concert_db_pool_requests_queued_total,
  concert_db_pool_requests_wait_seconds_total, concert_db_pool_requests_errors_total,
  concert_db_pool_connections_lost_total (psycopg_pool.get_stats(), read at scrape time)
- concert_job_runs_total{job_name, outcome="ran"|"skipped"} (skipped: another process held
  the job's lock), concert_job_duration_seconds{job_name},
  concert_job_last_run_timestamp_seconds{job_name} (not `job`: Prometheus gives every series
  its scrape job's name as `job`, and a metric's own `job` label would be renamed `exported_job`)
- process_* and python_* (the standard process and runtime collectors)
- whatever features publish through register_gauge_callback / register_gauges.

Publishing a feature's gauges (the queue's issued, completed, waiting, admitted):

    async def read_queue_gauges() -> dict[str, float]:
        async with ctx.pool.connection() as conn:
            ...  # one query
        return {"concert_queue_issued": issued, "concert_queue_waiting": waiting, ...}

    ctx.metrics.register_gauges(
        {"concert_queue_issued": "Tokens issued so far", "concert_queue_waiting": "..."},
        read_queue_gauges,
    )
    ctx.metrics.register_gauge_callback("concert_x", "help", lambda: 3.0)

The reader runs at every scrape. A plain function runs in the scrape thread and
must not block. A coroutine function runs on the server's event loop (so it may
use the pool) and has SCRAPE_CALLBACK_TIMEOUT seconds; if it fails or is late,
its gauges are left out of that scrape and the failure is logged. Register
while wiring the feature (in `register()`), before or after the server starts;
a name already taken raises ValueError.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from server.jobs import JobRun
from server.observability.loop_lag import LAG_BUCKETS

log = logging.getLogger(__name__)

# How long a scrape waits for one asynchronous gauge reader.
SCRAPE_CALLBACK_TIMEOUT = 2.0

# From 1 ms (a read served from the pool) to 30 s (well past any deadline).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

GaugeValues = Mapping[str, float]
GaugeReader = Callable[[], GaugeValues | Awaitable[GaugeValues]]


class Metrics:
    """The metrics of one App: its own registry, so many apps can share a process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        rpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.rpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.rpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by the status code the caller saw.",
            (*rpc_labels, "grpc_code"),
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, in seconds.",
            rpc_labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.job_runs = Counter(
            "concert_job_runs",
            "Scheduled job runs in this process; skipped: another process held the job's lock.",
            ("job_name", "outcome"),
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "concert_job_duration_seconds",
            "Duration of the job runs this process made, in seconds.",
            ("job_name",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "concert_event_loop_lag_seconds",
            "How much later than asked the event loop woke a sampler, every 100 ms.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self._job_last_run: dict[str, float] = {}
        self._loop = _EventLoop()
        self.registry.register(_JobTimestamps(self._job_last_run))
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    # --- what features call -------------------------------------------------

    def register_gauges(self, gauges: Mapping[str, str], read: GaugeReader) -> None:
        """Publish gauges {name: help} whose values `read()` returns as {name: value}."""
        self.registry.register(_GaugeGroup(dict(gauges), read, self._loop))

    def register_gauge_callback(
        self, name: str, help: str, fn: Callable[[], float | Awaitable[float]]
    ) -> None:
        """Publish one gauge whose value `fn()` returns (sync, or async on the event loop)."""
        if inspect.iscoroutinefunction(fn):

            async def read_async() -> GaugeValues:
                return {name: await fn()}

            self.register_gauges({name: help}, read_async)
        else:
            self.register_gauges({name: help}, lambda: {name: fn()})  # type: ignore[dict-item]

    # --- what the server wires ----------------------------------------------

    def observe_job(self, run: JobRun) -> None:
        """A JobRunner listener."""
        if not run.ran:
            self.job_runs.labels(run.name, "skipped").inc()
            return
        self.job_runs.labels(run.name, "ran").inc()
        self.job_seconds.labels(run.name).observe(run.seconds)
        self._job_last_run[run.name] = time.time()

    def watch_pool(self, pool: Any, name: str = "concert") -> None:
        """Report the pool's get_stats() at every scrape."""
        self.registry.register(_PoolStats(pool, name))

    def serve(self, listen: str) -> int:
        """Serve /metrics on HOST:PORT from a thread; returns the bound port."""
        self._loop.loop = asyncio.get_running_loop()
        host, _, port = listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        self._http = (server, thread)
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop_serving(self) -> None:
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _EventLoop:
    """The server's event loop, known once the metrics endpoint is served."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None


class _GaugeGroup(Collector):
    """Gauges whose values one reader returns, evaluated at every scrape."""

    def __init__(self, help_by_name: dict[str, str], read: GaugeReader, loop: _EventLoop) -> None:
        self._help_by_name = help_by_name
        self._read = read
        self._loop = loop

    def describe(self) -> Iterable[Metric]:
        # Lets the registry refuse a name that is already taken.
        return [GaugeMetricFamily(name, help) for name, help in self._help_by_name.items()]

    def collect(self) -> Iterable[Metric]:
        names = sorted(self._help_by_name)
        try:
            result = self._read()
            values = self._await_on_loop(result) if inspect.isawaitable(result) else result
        except Exception as exc:
            log.warning("metrics reader for %s failed: %r", names, exc)
            return
        for name, help in self._help_by_name.items():
            if name in values:
                yield GaugeMetricFamily(name, help, value=float(values[name]))

    def _await_on_loop(self, awaitable: Awaitable[GaugeValues]) -> GaugeValues:
        loop = self._loop.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop.is_closed() or running is loop:
            # Not served yet, or scraped from the loop's own thread (it would
            # wait on itself).
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError("asynchronous gauges are read only by the metrics endpoint")

        async def read() -> GaugeValues:
            return await asyncio.wait_for(awaitable, SCRAPE_CALLBACK_TIMEOUT)

        future = asyncio.run_coroutine_threadsafe(read(), loop)
        try:
            return future.result(timeout=SCRAPE_CALLBACK_TIMEOUT + 1)
        except BaseException:
            future.cancel()
            raise


class _PoolStats(Collector):
    def __init__(self, pool: Any, name: str) -> None:
        self._pool = pool
        self._name = name

    def collect(self) -> Iterable[Metric]:
        stats = self._pool.get_stats()
        label = ("pool",)
        gauges = (
            ("concert_db_pool_min_connections", "Configured minimum size.", "pool_min", 1),
            ("concert_db_pool_max_connections", "Configured maximum size.", "pool_max", 1),
            ("concert_db_pool_size_connections", "Connections open now.", "pool_size", 1),
            ("concert_db_pool_available_connections", "Idle now.", "pool_available", 1),
            ("concert_db_pool_requests_waiting", "Callers waiting now.", "requests_waiting", 1),
        )
        counters = (
            ("concert_db_pool_requests", "Connections handed out.", "requests_num", 1),
            ("concert_db_pool_requests_queued", "Requests that had to wait.", "requests_queued", 1),
            (
                "concert_db_pool_requests_wait_seconds",
                "Total time requests waited.",
                "requests_wait_ms",
                1000,
            ),
            (
                "concert_db_pool_requests_errors",
                "Requests that failed (timeout, pool closed).",
                "requests_errors",
                1,
            ),
            (
                "concert_db_pool_connections_lost",
                "Connections found broken.",
                "connections_lost",
                1,
            ),
        )
        for name, help, key, divisor in gauges:
            gauge = GaugeMetricFamily(name, help, labels=label)
            gauge.add_metric([self._name], stats.get(key, 0) / divisor)
            yield gauge
        for name, help, key, divisor in counters:
            counter = CounterMetricFamily(name, help, labels=label)
            counter.add_metric([self._name], stats.get(key, 0) / divisor)
            yield counter


class _JobTimestamps(Collector):
    def __init__(self, last_run: dict[str, float]) -> None:
        self._last_run = last_run

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "concert_job_last_run_timestamp_seconds",
            "When this process last finished a run of the job (Unix time).",
            labels=("job_name",),
        )
        for job, at in dict(self._last_run).items():
            gauge.add_metric([job], at)
        yield gauge
