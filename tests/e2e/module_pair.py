"""The concert server and the sandbox payment module as two OS processes over two
databases, for the clients that pay through the module end to end (grpcurl, Node).

The processes are started as tests/payment_module/processes.py starts them
(the module's callback retried within seconds); this adds what an end-to-end
client cannot do itself: let a hold lapse (the server's clock is its own, so
the hold's expiry is moved into the past in the server's database), read both
books, and wait for them to settle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.e2e.servers import ServerProcess
from tests.payment_module.processes import (
    check_books,
    start_concert_server,
    start_module,
    wait_until,
)
from tests.payment_modules import secrets_file


@dataclass(frozen=True)
class ModulePair:
    server: ServerProcess
    module: ServerProcess
    server_url: str
    module_url: str

    def lapse_hold(self, reservation_id: str) -> None:
        """The hold's expiry moved a second into the past: the server now treats
        it as lapsed (the expiry job may turn it EXPIRED at its next run)."""
        with psycopg.connect(self.server_url) as conn:
            moved = conn.execute(
                "UPDATE reservations SET expires_at = now() - interval '1 second'"
                " WHERE id = %s AND state = 'held'",
                (reservation_id,),
            ).rowcount
            conn.execute(
                "UPDATE seats SET held_until = now() - interval '1 second'"
                " WHERE reservation_id = %s",
                (reservation_id,),
            )
        assert moved == 1, f"reservation {reservation_id} is not held"

    def settled(self) -> None:
        """Both books agree (check_books), once the module's outbox has drained."""
        wait_until(lambda: not check_books(self.module_url, self.server_url), "books settle")
        assert check_books(self.module_url, self.server_url) == []


@contextmanager
def running_module_pair(server_url: str, module_url: str, log_dir: Path) -> Iterator[ModulePair]:
    """Both processes ready (health SERVING), stopped with SIGTERM after; each must exit 0."""
    secrets = secrets_file(log_dir)
    server = start_concert_server("server", server_url, secrets, log_dir)
    module: ServerProcess | None = None
    try:
        server.wait_ready()
        module = start_module("module", module_url, server.address, secrets, log_dir)
        module.wait_ready()
        yield ModulePair(server, module, server_url, module_url)
    finally:
        for process in (module, server):
            if process is not None and process.alive():
                code = process.stop()
                assert code == 0, f"{process.name} exit code {code}:\n{process.log[-4000:]}"
