"""Command line: `python -m server COMMAND`, COMMAND one of serve (the default),
migrate, seed-demo, healthcheck, check, check-books, rotate-key.

Configuration comes from CONCERT_* environment variables (see server.config),
and tracing from the standard OTEL_* ones (server/observability/tracing.py);
a bad value stops the process with a one-line error and exit code 2.
What a server says about itself (listening, draining, a failed start) is a log
line in CONCERT_LOG_FORMAT, JSON included; the one-off commands' reports
(check, rotate-key, seed-demo) are printed on stdout for the person who ran them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from typing import TYPE_CHECKING

from server.config import ConfigError, Settings
from server.db.embedded import EmbeddedPostgresUnavailable, start_embedded_postgres
from server.observability.logs import configure_logging, fatal_start_error, lifecycle
from server.observability.tracing_env import TracingConfig

if TYPE_CHECKING:
    from server.accounts.pause_board import PauseSeat
    from server.observability.tracing import Tracing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=(
            "serve",
            "migrate",
            "seed-demo",
            "healthcheck",
            "check",
            "check-books",
            "rotate-key",
        ),
    )
    parser.add_argument(
        "--service",
        default="",
        help="healthcheck: the health service name (liveness, readiness; default readiness)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        tracing = TracingConfig.from_env()
    except ConfigError as exc:
        fatal_start_error(str(exc))
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "healthcheck":
        from server.observability.healthcheck import check_health

        return check_health(settings, service=args.service)
    try:
        database_url = settings.database_url or start_embedded_postgres(settings.data_dir)
    except EmbeddedPostgresUnavailable as exc:
        fatal_start_error(str(exc), settings.log_format)
        return 2
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, database_url))
    if args.command == "seed-demo":
        return asyncio.run(_seed_demo(settings, database_url))
    if args.command == "check":
        return asyncio.run(_check(settings, database_url))
    if args.command == "check-books":
        return asyncio.run(_check_books(settings, database_url))
    if args.command == "rotate-key":
        return asyncio.run(_rotate_key(settings, database_url))
    if settings.workers > 1:
        return _serve_workers(settings, database_url, tracing)
    return asyncio.run(_serve(settings, database_url, tracing))


def _serve_workers(settings: Settings, database_url: str, tracing: TracingConfig) -> int:
    """CONCERT_WORKERS server processes under one supervisor (server/workers.py),
    sharing one pause board: a fan's hash in any of them stops every process's
    open lane (server/accounts/pause_board.py)."""
    from server.accounts.pause_board import open_board
    from server.cpu import cpus_per_process
    from server.workers import run_workers

    board = open_board(settings.workers, workers_each=cpus_per_process(settings.workers))
    return run_workers(
        settings.workers,
        lambda index: asyncio.run(
            _serve(
                settings,
                database_url,
                tracing,
                hashing_seat=board.seat(index) if board is not None else None,
            )
        ),
        grace_seconds=settings.shutdown_grace_seconds,
        on_exit=board.release if board is not None else None,
    )


async def _serve(
    settings: Settings,
    database_url: str,
    tracing_config: TracingConfig,
    hashing_seat: PauseSeat | None = None,
) -> int:
    # Started in the serving process itself: a forked worker gets its own
    # exporter thread (threads do not survive fork).
    tracing = tracing_config.start()
    try:
        return await _serve_traced(settings, database_url, tracing, hashing_seat)
    finally:
        if tracing is not None:
            tracing.shutdown()


async def _serve_traced(
    settings: Settings,
    database_url: str,
    tracing: Tracing | None,
    hashing_seat: PauseSeat | None,
) -> int:
    from server.app import build_app

    app = await build_app(
        settings, database_url=database_url, tracing=tracing, hashing_seat=hashing_seat
    )
    if settings.seed_demo and settings.database_url is None:
        # The embedded database is for trying the service: give it something to book.
        from server.demo import seed_demo

        await seed_demo(app.ctx, app.accounts)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # A worker under server.workers starts with these blocked; handled from here on.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))
    await app.start()
    # What is alive once serving (modules, descriptors, the pool, what start-up
    # built) lives as long as the process: frozen out of the cyclic collector's
    # way, its full collections walk only what calls leave behind (they took
    # 20-40 ms of the event loop every few seconds under a storm of refusals;
    # docs/load-test-report.md, Round 12).
    gc.collect()
    gc.freeze()
    # Tools wait for this line (scripts/loadgen counts it per worker).
    lifecycle.info(
        "concert.v1 listening on %s",
        app.address,
        extra={"address": app.address, "tracing": tracing is not None},
    )
    await stopping.wait()
    lifecycle.info("signal received: draining for up to %.1fs", settings.shutdown_grace_seconds)
    await app.stop()
    return 0


async def _migrate(settings: Settings, database_url: str) -> int:
    from server.db.migrate import migrate
    from server.db.pool import open_pool

    pool = await open_pool(database_url, settings, min_size=1)
    try:
        async with pool.connection() as conn:
            applied = await migrate(conn)
    finally:
        await pool.close()
    # The migration Job's output: a log line, in the format the pods log in.
    if applied:
        lifecycle.info("applied %d migration(s): %s", len(applied), applied)
    else:
        lifecycle.info("schema up to date")
    return 0


async def _check(settings: Settings, database_url: str) -> int:
    """Check the invariants (server.invariants) now; exit 1 if any is violated."""
    from datetime import timedelta

    from server.clock import SystemClock
    from server.invariants import check_database

    report = await check_database(
        database_url,
        SystemClock().now(),
        expiry_grace=timedelta(seconds=settings.expiry_interval_seconds),
    )
    print(report)
    violated = len(report.violated)
    print(f"{len(report.findings) - violated} invariant(s) hold, {violated} violated")
    return 1 if violated else 0


async def _check_books(settings: Settings, database_url: str) -> int:
    """Check the server's book against every payment module with an address in
    CONCERT_PAYMENT_MODULE_SECRETS_FILE (server.invariants.check_books); exit 1
    on a violation, 2 when there is no such module or one cannot be read."""
    from datetime import timedelta

    import grpc
    import psycopg

    from server.booking.module_auth import ModuleSecrets
    from server.booking.module_client import module_clients
    from server.clock import SystemClock
    from server.invariants import check_books

    try:
        secrets = ModuleSecrets.from_file(settings.payment_module_secrets_file)
    except ValueError as exc:
        print(f"error: CONCERT_PAYMENT_MODULE_SECRETS_FILE: {exc}", file=sys.stderr)
        return 2
    if not secrets.addresses:
        print(
            "error: no payment module with an address in CONCERT_PAYMENT_MODULE_SECRETS_FILE"
            " ('<module id> <secret> HOST:PORT'): no book to check against",
            file=sys.stderr,
        )
        return 2
    clock = SystemClock()
    try:
        async with (
            await psycopg.AsyncConnection.connect(
                database_url, autocommit=True, options="-c statement_timeout=60000 -c TimeZone=UTC"
            ) as conn,
            module_clients(secrets, clock) as clients,
        ):
            report = await check_books(
                conn,
                clients,
                clock.now(),
                interval=timedelta(seconds=settings.expiry_interval_seconds),
            )
    except grpc.aio.AioRpcError as error:
        print(
            f"error: a payment module's book cannot be read: {error.code().name}: "
            f"{error.details()}",
            file=sys.stderr,
        )
        return 2
    print(report)
    violated = len(report.violated)
    print(f"{len(report.findings) - violated} books invariant(s) hold, {violated} violated")
    return 1 if violated else 0


async def _rotate_key(settings: Settings, database_url: str) -> int:
    """Add the next signing key (server/signing.py); retire the ones no credential needs."""
    from datetime import timedelta

    import psycopg

    from server.clock import SystemClock
    from server.db.migrate import migrate
    from server.signing import rotate_signing_key

    if settings.signing_keys_are_secret:
        print(
            "error: the signing keys come from CONCERT_SIGNING_KEYS(_FILE): rotate them there",
            file=sys.stderr,
        )
        return 2
    # A credential signed by a key just superseded lives at most this long.
    keep_for = timedelta(seconds=max(settings.session_ttl_seconds, settings.token_ttl_seconds))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate(conn)
        rotation = await rotate_signing_key(conn, SystemClock(), keep_for)
    print(
        f"signing key {rotation.kid} added: it signs from {rotation.active_from.isoformat()}"
        f" (every server learns it before then); retired: {rotation.retired or 'none'}"
    )
    return 0


async def _seed_demo(settings: Settings, database_url: str) -> int:
    from server.app import build_app
    from server.demo import DEMO_EMAIL, DEMO_PASSWORD, seed_demo

    app = await build_app(settings, database_url=database_url, start_jobs=False)
    try:
        created = await seed_demo(app.ctx, app.accounts)
    finally:
        await app.stop(grace=0)
    state = "created" if created else "already present"
    print(f"demo data {state}: sign in as {DEMO_EMAIL} / {DEMO_PASSWORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
