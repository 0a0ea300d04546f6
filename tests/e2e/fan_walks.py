"""What the clients in other languages share: a concert to walk through, and their walk's check.

Each client (tests/e2e/node, tests/e2e/go) walks one fan through the whole
flow and prints a JSON summary last; the test then checks the summary against
the database, so a client cannot pass by saying it did what it did not.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.servers import ServerProcess
from tests.e2e.toolchains import SERVICE_CONFIG
from tests.support import ADMIN

SEAT_PRICE = 4200
WALK_STEPS = ("sign-up", "sign-in", "token", "watch", "dates", "seats", "hold", "pay", "balance")


def configured_channel(address: str) -> grpc.Channel:
    """A Python channel under the service config shipped with the protos."""
    return grpc.insecure_channel(
        address, options=[("grpc.service_config", SERVICE_CONFIG.read_text())]
    )


def create_concert(address: str, title: str) -> admin_pb2.CreateConcertResponse:
    """One concert with one date in 20 days and ten seats."""
    start = Timestamp()
    start.FromDatetime((datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0))
    request = admin_pb2.CreateConcertRequest(
        title=title,
        venue="Arena",
        dates=[
            admin_pb2.ConcertDateSpec(
                start_time=start,
                seats=[admin_pb2.SeatSpec(seat_number=n, price=SEAT_PRICE) for n in range(1, 11)],
            )
        ],
        request_id=str(uuid.uuid4()),
    )
    with configured_channel(address) as channel:
        reply: admin_pb2.CreateConcertResponse = admin_pb2_grpc.AdminServiceStub(
            channel
        ).CreateConcert(request, metadata=ADMIN)
        return reply


def check_walk(
    output: str, server: ServerProcess, concert: admin_pb2.CreateConcertResponse
) -> dict[str, Any]:
    """Every step reported, and what the client says it did is what the database holds."""
    lines = output.splitlines()
    steps = [line.removeprefix("ok  ").split(" (")[0] for line in lines if line.startswith("ok  ")]
    assert tuple(steps) == WALK_STEPS, output
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["date_id"] == concert.dates[0].date_id
    assert summary["amount"] == SEAT_PRICE
    with psycopg.connect(server.env["CONCERT_DATABASE_URL"]) as conn:
        sold = conn.execute(
            "SELECT seat_number FROM seats WHERE date_id = %s AND sold", (summary["date_id"],)
        ).fetchall()
        assert sold == [(summary["seat_number"],)]
        payments = conn.execute(
            "SELECT id::text, amount FROM payments WHERE user_id = %s AND state = 'completed'",
            (summary["user_id"],),
        ).fetchall()
        assert payments == [(summary["payment_id"], SEAT_PRICE)]
        balance = conn.execute(
            "SELECT balance FROM wallets WHERE user_id = %s", (summary["user_id"],)
        ).fetchone()
        assert balance == (summary["balance"],) == (1000,)
    return summary
