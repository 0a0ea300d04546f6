"""CONCERT_WORKERS=N: N server processes on one port under a supervisor.

These start the real `python -m server` as a subprocess against a fresh
database and talk to it over loopback, then stop it with a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import grpc
import psutil
import pytest

from concert.v1 import account_pb2
from server.accounts.passwords import OPEN_LANE_NICENESS
from server.config import Settings
from server.db.pool import open_pool
from server.jobs import JobRunner
from tests.accounts.lanes import process_state
from tests.fans import SignedUpFan, new_fan
from tests.support import TEST_ADMIN_KEY, Stubs, eventually, free_port, is_serving

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _start(database_url: str, workers: int, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CONCERT_DATABASE_URL": database_url,
        "CONCERT_LISTEN": address,
        "CONCERT_WORKERS": str(workers),
        "CONCERT_ADMIN_KEY": TEST_ADMIN_KEY,
        "CONCERT_SEED_DEMO": "false",
        "CONCERT_SHUTDOWN_GRACE_SECONDS": "2",
    }
    env.update(settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "server"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return process, address


def _wait_for_workers(process: subprocess.Popen[bytes], address: str, count: int) -> list[int]:
    """The worker pids, once `count` of them run and the port answers SERVING."""
    deadline = time.monotonic() + START_TIMEOUT
    parent = psutil.Process(process.pid)
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        children = parent.children()
        # SERVING proves one worker listens; wait until every one has bound the port.
        if (
            len(children) == count
            and all(_listens(child, address) for child in children)
            and is_serving(address, timeout=2.0)
        ):
            return [child.pid for child in children]
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"{count} workers did not start serving on {address}")


def _listens(process: psutil.Process, address: str) -> bool:
    port = int(address.rpartition(":")[2])
    try:
        return any(
            c.laddr.port == port and c.status == psutil.CONN_LISTEN
            for c in process.net_connections("tcp")
        )
    except psutil.NoSuchProcess:
        return False


def _output(process: subprocess.Popen[bytes]) -> str:
    return process.stdout.read().decode() if process.stdout else ""


@pytest.mark.slow
def test_two_workers_share_the_port_and_stop_cleanly_on_sigterm(create_database) -> None:  # type: ignore[no-untyped-def]
    process, address = _start(create_database(), workers=2)
    try:
        workers = _wait_for_workers(process, address, 2)
        # Both workers listen on the same port (SO_REUSEPORT).
        for pid in workers:
            ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")}
            assert int(address.rpartition(":")[2]) in ports
        # Many fresh connections all get SERVING, whichever worker accepts them.
        assert all(is_serving(address, timeout=2.0) for _ in range(10))
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    output = _output(process)
    assert code == 0, output
    assert "all workers stopped" in output
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_workers_drain_and_exit_when_their_supervisor_is_killed(create_database) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL gives the supervisor no chance to forward anything: the kernel
    sends each worker SIGTERM (PR_SET_PDEATHSIG), and they drain and exit,
    their hashing processes with them, instead of serving on unsupervised."""
    process, address = _start(create_database(), workers=2)
    try:
        workers = _wait_for_workers(process, address, 2)
        everything = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in everything) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in everything if _alive(pid)]
        assert set(workers) <= set(everything)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_others_and_fails_the_supervisor(create_database) -> None:  # type: ignore[no-untyped-def]
    process, address = _start(create_database(), workers=2)
    try:
        workers = _wait_for_workers(process, address, 2)
        os.kill(workers[0], signal.SIGKILL)
        code = process.wait(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 1, _output(process)
    assert not _alive(workers[1])


async def test_a_scheduled_job_runs_in_one_process_at_a_time(database_url: str) -> None:
    """Two runners on separate pools stand for two workers: the advisory lock lets one run."""
    settings = Settings(pool_min_size=1, pool_max_size=2)
    pools = [await open_pool(database_url, settings, name=f"worker{i}") for i in range(2)]
    try:
        inside = 0
        most_inside = 0
        started = asyncio.Event()

        async def job(conn: object) -> int:
            nonlocal inside, most_inside
            inside += 1
            most_inside = max(most_inside, inside)
            started.set()
            await asyncio.sleep(0.3)
            inside -= 1
            return 1

        runners = [JobRunner(pool) for pool in pools]
        for runner in runners:
            runner.add("bench-probe", job, interval_seconds=60)
        first = asyncio.create_task(runners[0].run_now("bench-probe"))
        await started.wait()
        second = await runners[1].run_now("bench-probe")
        assert (await first).ran
        assert not second.ran
        assert most_inside == 1
        # Once the first run released its lock, the other process may run it.
        assert (await runners[1].run_now("bench-probe")).ran
    finally:
        for pool in pools:
            await pool.close()


@pytest.mark.slow
async def test_a_fans_hash_in_either_worker_stops_both_workers_open_lanes(create_database) -> None:  # type: ignore[no-untyped-def]
    """The open lanes of every CONCERT_WORKERS process stop while a fan who
    shows a past session hashes in any of them (server/accounts/pause_board.py):
    each process used to stop only its own, so the other's junk hashing kept
    half the cores from the fan. Hashes cost ~0.1 s here, long enough to look."""
    process, address = _start(create_database(), workers=2, CONCERT_PASSWORD_HASH_COST="16")
    junk_running = True
    try:
        servers = _wait_for_workers(process, address, 2)
        async with grpc.aio.insecure_channel(address) as channel:
            fan = await new_fan(Stubs.on(channel))

        async def junk(channel: grpc.aio.Channel) -> None:
            stub = Stubs.on(channel).account
            while junk_running:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.SignIn(
                        account_pb2.SignInRequest(email="nobody@example.com", password="guess")
                    )

        # Connections of their own, spread over both processes by the kernel.
        channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(8)
        ]
        botnet = [asyncio.create_task(junk(channel)) for channel in channels]
        try:
            open_lanes = await _open_lane_workers_of_each(servers)
            fan_signs_in = asyncio.create_task(_sign_in_proven(address, fan))
            seen_all_stopped = False
            while not fan_signs_in.done():
                states = [process_state(pid) for pid in open_lanes]
                seen_all_stopped = seen_all_stopped or states == ["T"] * len(states)
                await asyncio.sleep(0.002)
            await fan_signs_in
            assert seen_all_stopped, "both processes' open lanes were never stopped at once"
            await eventually(
                lambda: "T" not in [process_state(pid) for pid in open_lanes],
                "the open lanes go on once the fan's hash ended",
            )
        finally:
            junk_running = False
            for channel in channels:
                await channel.close()
            await asyncio.gather(*botnet, return_exceptions=True)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_TIMEOUT) == 0, _output(process)
    finally:
        if process.poll() is None:
            process.kill()


async def _open_lane_workers_of_each(servers: list[int]) -> list[int]:
    """One hashing open-lane worker of each server process (the niced
    grandchildren: the server, multiprocessing's fork server, the worker)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = []
        for server in servers:
            workers = [
                child.pid
                for child in psutil.Process(server).children(recursive=True)
                if child.nice() == OPEN_LANE_NICENESS and process_state(child.pid) == "R"
            ]
            found += workers[:1]
        if len(found) == len(servers):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("the junk never kept both processes' open lanes hashing")


async def _sign_in_proven(address: str, fan: SignedUpFan) -> None:
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        reply = await Stubs.on(channel).account.SignIn(
            account_pb2.SignInRequest(
                email=fan.email, password=fan.password, previous_session_token=fan.session_token
            )
        )
    assert reply.session_token
