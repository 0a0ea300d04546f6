"""The payment module's composition root: its database, its gRPC server, its
callback dispatcher, for the command and the tests alike.

app = await build_module_app(settings, database_url=url, clock=clock)
await app.start()      # listening, health SERVING, the outbox dispatched
...
await app.stop()       # NOT_SERVING, drain, stop the dispatcher, close the pool
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import timedelta

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from paymentmodule.v1 import payment_module_pb2, payment_module_pb2_grpc
from psycopg import sql

from concert.v1 import payment_callback_pb2_grpc
from server.background import cancel_and_wait
from server.clock import Clock, SystemClock
from server.config import Settings
from server.db.embedded import start_embedded_postgres
from server.db.migrate import migrate
from server.db.pool import open_pool
from server.interceptors import CallPipeline
from server.payment_module.callbacks import CallbackDispatcher, CallbackSchedule
from server.payment_module.cards import SandboxPolicy
from server.payment_module.payments import ModulePayments, Pool
from server.payment_module.service import ERROR_DOMAIN, ModuleErrorLayer, PaymentModuleService
from server.payment_module.settings import ModuleSettings
from server.security.request_limits import guarded_deserializer

MIGRATIONS = "server.payment_module.migrations"
# The database the module makes for itself on the embedded cluster.
EMBEDDED_DATABASE = "payment_module"
SERVICE_NAME = payment_module_pb2.DESCRIPTOR.services_by_name["PaymentModuleService"].full_name


@dataclass
class ModuleApp:
    settings: ModuleSettings
    pool: Pool
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    payments: ModulePayments
    dispatcher: CallbackDispatcher
    channel: grpc.aio.Channel
    dispatch: bool
    _task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = self.settings.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        await self.server.start()
        if self.dispatch:
            self._task = asyncio.create_task(self.dispatcher.run(), name="callback-dispatcher")
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await cancel_and_wait(self._task)
        await self.channel.close(None)
        await self.pool.close()


def module_database_url(settings: ModuleSettings) -> str:
    """CONCERT_PAYMENT_MODULE_DATABASE_URL, or a database of the module's own on
    the embedded cluster in its data dir (created on first start)."""
    if settings.database_url is not None:
        return settings.database_url
    cluster_url = start_embedded_postgres(settings.data_dir)
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if found is None:
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE))
                )
            except psycopg.errors.DuplicateDatabase:
                pass  # another module process made it first
    return psycopg.conninfo.make_conninfo(cluster_url, dbname=EMBEDDED_DATABASE)


async def build_module_app(
    settings: ModuleSettings,
    *,
    database_url: str,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    dispatch: bool = True,
) -> ModuleApp:
    """The module, migrated and bound to its port (not yet serving).

    dispatch False: no background dispatcher (tests drive dispatcher.run_due
    with a FakeClock)."""
    clock = clock or SystemClock()
    rng = rng or random.Random()
    # The server's pool settings (timeouts, UTC) suit the module as they are.
    pool = await open_pool(
        database_url,
        Settings(pool_min_size=1, pool_max_size=settings.pool_max_size),
        name="payment-module",
    )
    try:
        async with pool.connection() as conn:
            await migrate(conn, package=MIGRATIONS)
    except BaseException:
        await pool.close()
        raise
    policy = SandboxPolicy(
        decline_percent=settings.decline_percent,
        delay_seconds=settings.delay_ms / 1000,
        slow_card_seconds=settings.slow_card_ms / 1000,
    )
    payments = ModulePayments(pool, clock, policy, rng)
    channel = grpc.aio.insecure_channel(settings.server_address)
    secret = settings.secret()
    dispatcher = CallbackDispatcher(
        pool,
        clock,
        settings.module_id,
        secret,
        payment_callback_pb2_grpc.PaymentCallbackServiceStub(channel),
        CallbackSchedule(
            base=timedelta(milliseconds=settings.retry_base_ms),
            maximum=timedelta(milliseconds=settings.retry_max_ms),
            timeout=timedelta(milliseconds=settings.callback_timeout_ms),
        ),
        rng,
    )
    # Every method's body is read by the guarded deserializer: an undecodable or
    # oversized one is INVALID_ARGUMENT or RESOURCE_EXHAUSTED with an ErrorInfo
    # of this module's domain, never UNKNOWN with a traceback.
    server = grpc.aio.server(
        interceptors=[
            CallPipeline(
                [ModuleErrorLayer()],
                guard_deserializer=guarded_deserializer,
                error_domain=ERROR_DOMAIN,
            )
        ]
    )
    payment_module_pb2_grpc.add_PaymentModuleServiceServicer_to_server(
        PaymentModuleService(payments, dispatcher, settings.module_id, secret, clock), server
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(settings.listen)
    return ModuleApp(settings, pool, server, health, port, payments, dispatcher, channel, dispatch)
