"""The embedded PostgreSQL killed with SIGKILL: the next start recovers it, payments intact.

`python -m server` (what scripts/serve runs) on an embedded cluster of the
test's own. A fan pays; then PostgreSQL is killed with SIGKILL, postmaster and
backends, leaving its postmaster.pid behind, and that file's PID is handed to
an unrelated live process (a PID reused, the case the embedding package takes
for a running server). The server is stopped and started again: it must run
PostgreSQL's crash recovery by itself, with no manual step, and find the
payment; the unrelated process must be left alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psutil
import psycopg
import pytest

from concert.v1 import payment_pb2, reservation_pb2, wallet_pb2
from server.db.embedded import open_cluster
from tests.clusters import kill_postgres
from tests.e2e.servers import REPOSITORY, ServerProcess, start_server
from tests.fans import admitted_fan
from tests.reliability.helpers import PRICE, concert_request_at
from tests.support import ADMIN, Stubs

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    # Whatever a failed test left running on it.
    pid_file = tmp_path / "data" / "pgdata" / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        if psutil.pid_exists(pid) and "postgres" in psutil.Process(pid).name():
            os.kill(pid, signal.SIGKILL)


def _serve(data_dir: Path, log_dir: Path, name: str) -> ServerProcess:
    server = start_server(name, None, log_dir, extra_env={"CONCERT_DATA_DIR": str(data_dir)})
    server.wait_ready()
    return server


async def _pay(server: ServerProcess) -> str:
    """A fan pays for a seat; the reservation's id."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stubs = Stubs.on(channel)
        concert = await stubs.admin.CreateConcert(
            concert_request_at(datetime.now(UTC), seats=3), metadata=ADMIN
        )
        fan = await admitted_fan(stubs)
        await stubs.wallet.Charge(
            wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=PRICE), metadata=ADMIN
        )
        held = await stubs.reservation.ReserveSeat(
            reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
            metadata=fan.metadata,
        )
        reservation_id = held.reservation.reservation_id
        await stubs.payment.Pay(
            payment_pb2.PayRequest(reservation_id=reservation_id), metadata=fan.metadata
        )
    return reservation_id


def _hand_pid_file_to(pgdata: Path, pid: int) -> None:
    pid_file = pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(pid), *lines[1:]]) + "\n")


def test_sigkilled_cluster_recovers_on_the_next_start_with_the_payment_intact(
    data_dir: Path, tmp_path: Path
) -> None:
    pgdata = data_dir / "pgdata"
    first = _serve(data_dir, tmp_path, "first")
    try:
        reservation_id = asyncio.run(_pay(first))
        kill_postgres(pgdata)
        assert (pgdata / "postmaster.pid").exists(), "the kill must leave the pid file behind"
    finally:
        # SIGTERM with its database gone: still a clean exit.
        assert first.stop() == 0, first.log
    # Later, the dead postmaster's PID belongs to someone else.
    bystander = subprocess.Popen(["sleep", "300"])
    _hand_pid_file_to(pgdata, bystander.pid)
    try:
        second = _serve(data_dir, tmp_path, "second")
        try:
            assert "automatic recovery in progress" in (pgdata / "log").read_text()
            cluster = open_cluster(pgdata)  # joins the running cluster
            try:
                with psycopg.connect(cluster.url) as conn:
                    row = conn.execute(
                        "SELECT r.state, p.amount, s.sold FROM reservations r"
                        " JOIN payments p ON p.reservation_id = r.id"
                        " JOIN seats s ON s.reservation_id = r.id WHERE r.id = %s",
                        (reservation_id,),
                    ).fetchone()
            finally:
                cluster.close()
            assert row == ("paid", PRICE, True)
            check = subprocess.run(
                [sys.executable, "-m", "server", "check"],
                env=second.env,
                cwd=REPOSITORY,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            assert second.stop() == 0, second.log
        # The package would have signalled the PID it took for PostgreSQL's.
        assert bystander.poll() is None, "an unrelated process was killed"
    finally:
        bystander.kill()
        bystander.wait()
