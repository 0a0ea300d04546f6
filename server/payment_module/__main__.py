"""Command line: `python -m server.payment_module [serve|migrate]`.

Runs the sandbox payment module (paymentmodule.v1) in a process of its own.
Configuration comes from CONCERT_PAYMENT_MODULE_* environment variables
(server/payment_module/settings.py); a bad value stops it with a one-line
error and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from server.config import ConfigError
from server.db.embedded import EmbeddedPostgresUnavailable
from server.observability.logs import configure_logging
from server.payment_module.app import MIGRATIONS, build_module_app, module_database_url
from server.payment_module.settings import ModuleSettings

log = logging.getLogger("server.payment_module")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.payment_module", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "migrate"))
    args = parser.parse_args(argv)
    try:
        settings = ModuleSettings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, "text")
    try:
        database_url = module_database_url(settings)
    except EmbeddedPostgresUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return asyncio.run(_migrate(database_url))
    return asyncio.run(_serve(settings, database_url))


async def _serve(settings: ModuleSettings, database_url: str) -> int:
    app = await build_module_app(settings, database_url=database_url)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await app.start()
    print(
        f"paymentmodule.v1 ({settings.module_id}) listening on {app.address},"
        f" reporting to {settings.server_address}",
        file=sys.stderr,
        flush=True,
    )
    await stopping.wait()
    log.info("signal received: stopping")
    await app.stop()
    return 0


async def _migrate(database_url: str) -> int:
    import psycopg

    from server.db.migrate import migrate

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        applied = await migrate(conn, package=MIGRATIONS)
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "schema up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
