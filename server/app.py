"""The composition root: builds the whole service, for production and tests alike.

app = await build_app(settings, database_url=url, clock=clock)
await app.start()      # listening; health SERVING
...
await app.stop()       # NOT_SERVING, refuse new calls, drain, close the pool
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from psycopg import AsyncConnection

from concert.v1 import (
    account_pb2,
    admin_pb2,
    concert_pb2,
    payment_callback_pb2,
    payment_pb2,
    queue_pb2,
    reservation_pb2,
    wallet_pb2,
)
from server import api
from server.accounts.install import install_accounts
from server.accounts.pacing import RefusalPacing
from server.accounts.passwords import PasswordHasher
from server.accounts.pause_board import PauseSeat
from server.accounts.runtime import AccountRuntime
from server.accounts.throttle import SignInThrottle
from server.admin_auth import AdminKeyLayer
from server.api.features import Features
from server.background import cancel_and_wait
from server.booking.gateway import WalletGateway
from server.booking.install import install_booking
from server.booking.module_auth import ModuleSecrets
from server.booking.runtime import BookingRuntime
from server.booking.seat_list_cache import SeatListCache
from server.clock import Clock, SystemClock
from server.config import ConfigError, Settings
from server.context import ServiceContext
from server.cpu import cpus_per_process, share_per_process
from server.db.migrate import migrate
from server.db.pool import open_pool
from server.db.probe import DatabaseProbe
from server.idempotency import PRUNE_JOB, prune_expired_keys
from server.interceptors import CallPipeline, ErrorLayer
from server.jobs import JobRunner
from server.observability.interceptor import ObservabilityLayer
from server.observability.loop_lag import sample_loop_lag
from server.queue.gate import QueueGateLayer
from server.queue.install import install_queue
from server.queue.runtime import QueueRuntime
from server.reflection import enable_reflection
from server.security.call_limit import CallLimitLayer
from server.security.request_limits import (
    LARGEST_REQUEST_BYTES,
    MAX_REQUEST_BYTES,
    RequestLimitLayer,
    guarded_deserializer,
)
from server.security.text import RequestTextLayer
from server.security.tls import server_credentials
from server.signing import (
    KEY_RELOAD_SECONDS,
    Signer,
    load_signing_keys,
    read_keys_file,
    read_keys_variable,
    read_signing_keys,
)

if TYPE_CHECKING:
    # Only named here: with tracing off, the OpenTelemetry SDK is never imported.
    from server.observability.tracing import Tracing

log = logging.getLogger(__name__)

# gRPC refuses requests above this size before buffering them; each method's
# own, smaller limit is checked before its request is parsed
# (server/security/request_limits.py). Replies may be larger (seat pages).
MAX_RECEIVE_BYTES = LARGEST_REQUEST_BYTES
MAX_SEND_BYTES = 8 * 1024 * 1024

# gRPC core queues calls that arrive faster than the server picks them up, and
# past grpc.server.max_pending_requests (1,000 by default) it cancels the
# oldest: a burst of 1,500 Health checks lost ~40 calls as CANCELLED. On-sale
# day is exactly such a burst, so let it queue (each waiting call costs a few
# KB); the hard limit still sheds a runaway backlog.
MAX_PENDING_CALLS = 20_000

# Connections (docs/reliability.md, "Limits"): clients may ping every 10 s or
# more (common Node and mobile defaults; grpc refused anything under 5 min and
# cut such clients' streams after ~30 s); the server pings a connection idle
# for 30 s itself and drops it when no answer comes within 20 s, so a
# half-open client's waiting stream and token are let go within about a
# minute. A connection lives at most CONCERT_MAX_CONNECTION_AGE_SECONDS (an
# hour, plus CONCERT_MAX_CONNECTION_AGE_GRACE_SECONDS, 10 minutes, for its
# calls to finish: connection_options), so long-lived clients rebalance
# across replicas.
CONNECTION_OPTIONS = [
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # grpc core waits for any ping's answer this long (its own default is 60 s,
    # and it outlasts keepalive_timeout: a dead client was dropped after 90 s).
    ("grpc.http2.ping_timeout_ms", 20_000),
]


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """CONNECTION_OPTIONS and the connection age the settings give."""
    return [
        *CONNECTION_OPTIONS,
        ("grpc.max_connection_age_ms", settings.max_connection_age_seconds * 1000),
        ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace_seconds * 1000),
    ]


# Every concert.v1 service, as protobuf descriptors (reflection, health, tests).
SERVICES = tuple(
    service
    for module in (
        account_pb2,
        queue_pb2,
        concert_pb2,
        reservation_pb2,
        payment_pb2,
        payment_callback_pb2,
        wallet_pb2,
        admin_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)

# grpc.health.v1 service names (docs/deploy.md). Liveness says the process
# works: it answers while the database is down (restarting the pod would not
# bring PostgreSQL back, and a fleet restarting at once crash-loops). Readiness
# adds the database and the queue's LISTEN connection; "" and every concert.v1
# service name answer as readiness does.
LIVENESS = "liveness"
READINESS = "readiness"


@dataclass
class App:
    ctx: ServiceContext
    features: Features
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    start_jobs: bool
    metrics_port: int | None = None  # where /metrics is served, when it is
    probe: DatabaseProbe | None = None  # flips readiness with the database
    # Plaintext health only, on CONCERT_HEALTH_LISTEN: probes that work whatever TLS says.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    key_reload: asyncio.Task[None] | None = None  # database signing keys, re-read
    tracing: Tracing | None = None  # spans per call and per statement, when on
    loop_lag: asyncio.Task[None] | None = None  # concert_event_loop_lag_seconds

    @property
    def queue(self) -> QueueRuntime:
        return self.features.queue

    @property
    def accounts(self) -> AccountRuntime:
        return self.features.accounts

    @property
    def booking(self) -> BookingRuntime:
        return self.features.booking

    @property
    def address(self) -> str:
        host = self.ctx.settings.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        if self.ctx.settings.metrics_listen:
            self.metrics_port = self.ctx.metrics.serve(self.ctx.settings.metrics_listen)
        await self.server.start()
        self.loop_lag = asyncio.create_task(
            sample_loop_lag(self.ctx.metrics.loop_lag), name="loop-lag"
        )
        if self.health_server is not None:
            await self.health_server.start()
        for hook in self.ctx.on_start:
            await hook()
        if self.start_jobs:
            self.ctx.jobs.start()
        if not self.ctx.settings.signing_keys_are_secret:
            self.key_reload = asyncio.create_task(
                _keep_signing_keys_current(self.ctx), name="signing-keys"
            )
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._set_ready(True)
        queue = self.features.queue
        self.probe = DatabaseProbe(
            self.ctx.pool, self._set_ready, also_ready=lambda: queue.listening
        )
        self.probe.start()
        log.info("serving concert.v1 on %s", self.address)

    async def _set_ready(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", READINESS, *SERVICE_NAMES):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING first, then refuse new calls and drain."""
        grace = self.ctx.settings.shutdown_grace_seconds if grace is None else grace
        if self.probe is not None:
            await self.probe.stop()
        await cancel_and_wait(self.key_reload)
        await self.health.enter_graceful_shutdown()
        self.ctx.jobs.stop()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for hook in reversed(self.ctx.on_stop):
            await hook()
        await cancel_and_wait(self.loop_lag)
        await self.ctx.pool.close()
        if self.ctx.replica_pool is not None:
            await self.ctx.replica_pool.close()
        self.ctx.metrics.stop_serving()  # last, so the drain itself can be scraped
        log.info("stopped")


async def build_app(
    settings: Settings,
    *,
    database_url: str,
    clock: Clock | None = None,
    start_jobs: bool = True,
    tracing: Tracing | None = None,
    hashing_seat: PauseSeat | None = None,
) -> App:
    """Connect, migrate, wire every service; the server is bound but not started.

    `tracing` (server/observability/tracing.py) traces every concert.v1 call and
    every statement on the pools' connections; None traces nothing. Its owner
    shuts it down after the App stops. `hashing_seat` is this process's slot on
    the pause board it shares with the other CONCERT_WORKERS processes (None: a
    single process, with a board of its own).
    """
    clock = clock or SystemClock()
    configure = tracing.instrument_connection if tracing is not None else None
    pool = await open_pool(database_url, settings, configure=configure)
    replica_pool = None
    try:
        if settings.database_read_url:
            # Not migrated: a replica follows the primary's schema (and refuses writes).
            replica_pool = await open_pool(
                settings.database_read_url, settings, name="concert-read", configure=configure
            )
        async with pool.connection() as conn:
            await migrate(conn)
            signer = await _signer(conn, settings, clock)
        ctx = ServiceContext(
            settings=settings,
            pool=pool,
            clock=clock,
            signer=signer,
            jobs=JobRunner(pool),
            replica_pool=replica_pool,
        )
        ctx.metrics.watch_pool(pool)
        if replica_pool is not None:
            ctx.metrics.watch_pool(replica_pool, "concert-read")
        ctx.jobs.listeners.append(ctx.metrics.observe_job)
        features = _build_features(ctx, hashing_seat)
        install_accounts(ctx, features.accounts)
        install_queue(ctx, features.queue)
        install_booking(ctx, features.booking)
        _install_idempotency_pruning(ctx)
        server = grpc.aio.server(
            interceptors=_interceptors(ctx, features.queue, tracing),
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS * 3 // 2),
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                *connection_options(settings),
            ],
        )
        api.register_all(server, ctx, features)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        enable_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
            server,
        )
        credentials = server_credentials(settings)
        if credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, credentials)
        if port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        health_server, health_port = _health_server(settings, health)
        return App(
            ctx=ctx,
            features=features,
            server=server,
            health=health,
            port=port,
            start_jobs=start_jobs,
            health_server=health_server,
            health_port=health_port,
            tracing=tracing,
        )
    except BaseException:
        await pool.close()
        if replica_pool is not None:
            await replica_pool.close()
        raise


async def _signer(conn: AsyncConnection, settings: Settings, clock: Clock) -> Signer:
    signer = Signer()
    if settings.signing_keys_file is not None:
        try:
            keys, current = read_keys_file(settings.signing_keys_file)
            signer.use(keys, current=current)
        except ValueError as exc:
            raise ConfigError(f"CONCERT_SIGNING_KEYS_FILE: {exc}") from None
    elif settings.signing_keys is not None:
        try:
            keys, current = read_keys_variable(settings.signing_keys)
            signer.use(keys, current=current)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None  # names the variable, never its value
    else:
        signer.use(await load_signing_keys(conn, clock), now=clock.now())
    return signer


async def _keep_signing_keys_current(ctx: ServiceContext) -> None:
    """Database keys: re-read them, so a rotated key is known here before it signs."""
    while True:
        await asyncio.sleep(KEY_RELOAD_SECONDS)
        try:
            await reload_signing_keys(ctx)
        except Exception:
            log.warning("could not re-read the signing keys; keeping the ones known", exc_info=True)


async def reload_signing_keys(ctx: ServiceContext) -> None:
    async with ctx.pool.connection() as conn:
        keys = await read_signing_keys(conn)
    ctx.signer.use(keys, now=ctx.clock.now())


def _health_server(
    settings: Settings, health: HealthServicer
) -> tuple[grpc.aio.Server | None, int | None]:
    """grpc.health.v1 alone, plaintext, on CONCERT_HEALTH_LISTEN (unset: none).

    Kubernetes' gRPC probes speak no TLS: with TLS (or mutual TLS) on the
    service port, the probes use this port, which tells nothing but health.
    Its requests are read as the service port's are (a malformed or oversized
    body: INVALID_ARGUMENT or RESOURCE_EXHAUSTED with an ErrorInfo, never
    UNKNOWN), and nothing over MAX_REQUEST_BYTES is even buffered.
    """
    if not settings.health_listen:
        return None, None
    server = grpc.aio.server(
        interceptors=[CallPipeline([], guard_deserializer=guarded_deserializer)],
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(settings.health_listen)
    if port == 0:
        raise OSError(f"cannot listen on {settings.health_listen}")
    return server, port


def _build_features(ctx: ServiceContext, hashing_seat: PauseSeat | None) -> Features:
    """The features' runtimes, each handed to the servicers and jobs that use it."""
    settings = ctx.settings
    # Hashing workers for this process's share of the CPUs: with CONCERT_WORKERS
    # processes on one machine, each sized for all of them would run N times
    # as many hashes as there are cores, each N times slower.
    hasher = PasswordHasher(
        settings.password_hash_cost,
        workers=cpus_per_process(settings.workers),
        seat=hashing_seat,
    )
    accounts = AccountRuntime(
        hasher,
        SignInThrottle(ctx.pool, ctx.clock),
        signer=ctx.signer,
        # The machine's rate, shared out like its CPUs: the refusals answered
        # at once in every process take time from the same cores as a fan's
        # hash (docs/load-test-report.md, Round 13).
        pacing=RefusalPacing(
            share_per_process(settings.password_refusals_at_once_per_second, settings.workers)
        ),
    )
    queue = QueueRuntime(settings, ctx.pool, ctx.clock)
    booking = BookingRuntime(
        gateway=WalletGateway(ctx.pool, ctx.clock),
        seat_lists=SeatListCache(timedelta(milliseconds=settings.seat_list_max_age_ms)),
        token_completed=queue.completed_here,
        module_secrets=_module_secrets(settings),
    )
    return Features(accounts=accounts, queue=queue, booking=booking)


def _module_secrets(settings: Settings) -> ModuleSecrets:
    try:
        return ModuleSecrets.from_file(settings.payment_module_secrets_file)
    except ValueError as exc:
        raise ConfigError(f"CONCERT_PAYMENT_MODULE_SECRETS_FILE: {exc}") from None


def _install_idempotency_pruning(ctx: ServiceContext) -> None:
    ttl = timedelta(hours=ctx.settings.idempotency_ttl_hours)

    async def prune(conn: AsyncConnection) -> int:
        return await prune_expired_keys(conn, ctx.clock.now() - ttl)

    ctx.jobs.add(PRUNE_JOB, prune, ctx.settings.expiry_interval_seconds)


def _interceptors(
    ctx: ServiceContext, queue: QueueRuntime, tracing: Tracing | None
) -> list[grpc.aio.ServerInterceptor]:
    # One interceptor running the layers, outermost first: the error mapper must
    # see the failures of every layer; observability wraps it to count and log
    # the status the caller receives. The tracing interceptor, when on, comes
    # before it (grpc.aio runs the first interceptor outermost), so the call's
    # span is current in every layer, in the log lines and around the SQL.
    traced = [tracing.server_interceptor()] if tracing is not None else []
    return [
        *traced,
        CallPipeline(
            [
                ObservabilityLayer(ctx.metrics),
                ErrorLayer(),
                CallLimitLayer(ctx.settings.max_concurrent_calls),
                RequestLimitLayer(),  # an oversized or undecodable body: its status
                AdminKeyLayer(ctx.settings.admin_key),
                QueueGateLayer(ctx.signer, ctx.clock, queue),
                RequestTextLayer(),  # NUL in any string field: INVALID_ARGUMENT
            ],
            guard_deserializer=guarded_deserializer,
        ),
    ]
