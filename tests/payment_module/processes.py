"""The sandbox payment module and the concert server as separate OS processes,
and the cross-book check between their two databases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from paymentmodule.v1 import payment_module_pb2 as pm

from concert.v1 import account_pb2, admin_pb2, admin_pb2_grpc, queue_pb2, reservation_pb2
from tests.e2e.servers import REPOSITORY, ServerProcess, start_server
from tests.payment_modules import MODULE
from tests.support import ADMIN, Stubs, bearer, free_port

PRICE = 5_000


def start_module(
    name: str,
    database_url: str,
    server_address: str,
    secret_file: Path,
    log_dir: Path,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> ServerProcess:
    """`python -m server.payment_module` reporting to server_address (not waited for)."""
    port = port or free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONCERT_")}
    env.update(
        {
            "CONCERT_PAYMENT_MODULE_LISTEN": f"127.0.0.1:{port}",
            "CONCERT_PAYMENT_MODULE_SERVER": server_address,
            "CONCERT_PAYMENT_MODULE_ID": MODULE,
            "CONCERT_PAYMENT_MODULE_SECRET_FILE": str(secret_file),
            "CONCERT_PAYMENT_MODULE_DATABASE_URL": database_url,
            # Quick retries, so a test waits for seconds, not minutes.
            "CONCERT_PAYMENT_MODULE_RETRY_BASE_MS": "100",
            "CONCERT_PAYMENT_MODULE_RETRY_MAX_MS": "1000",
            "CONCERT_PAYMENT_MODULE_CALLBACK_TIMEOUT_MS": "2000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.payment_module"],
            cwd=REPOSITORY,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(name, port, log_path, process, env=env)


def start_concert_server(
    name: str, database_url: str, secret_file: Path, log_dir: Path, *, port: int | None = None
) -> ServerProcess:
    """`python -m server` that accepts the sandbox module's callbacks."""
    return start_server(
        name,
        database_url,
        log_dir,
        port=port,
        extra_env={
            "CONCERT_PAYMENT_MODULE_SECRETS_FILE": str(secret_file),
            # Room for a test that holds a row the server's sale waits for.
            "CONCERT_LOCK_TIMEOUT_MS": "20000",
            "CONCERT_STATEMENT_TIMEOUT_MS": "30000",
        },
    )


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    """Poll until condition() is truthy (a state another process reaches); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        time.sleep(0.05)


class Fan:
    """One fan, over the server's public API (sync stubs), holding one seat."""

    def __init__(self, server: grpc.Channel) -> None:
        self.stubs = Stubs.on(server)  # type: ignore[arg-type]  # sync stubs, same shape
        email = f"fan-{uuid.uuid4().hex[:12]}@example.com"
        self.stubs.account.SignUp(account_pb2.SignUpRequest(email=email, password="pw-12345678"))
        session = self.stubs.account.SignIn(
            account_pb2.SignInRequest(email=email, password="pw-12345678")
        )
        self.session_token = session.session_token
        issued = self.stubs.queue.IssueToken(
            queue_pb2.IssueTokenRequest(session_token=self.session_token)
        )
        assert issued.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
        self.token = issued.token

    def hold(self, date_id: str, seat: int) -> str:
        reply = self.stubs.reservation.ReserveSeat(
            reservation_pb2.ReserveSeatRequest(
                date_id=date_id, seat_number=seat, request_id=str(uuid.uuid4())
            ),
            metadata=bearer(self.token),
        )
        return str(reply.reservation.reservation_id)

    def reservation(self, reservation_id: str) -> reservation_pb2.Reservation:
        return self.stubs.reservation.GetReservation(
            reservation_pb2.GetReservationRequest(reservation_id=reservation_id),
            metadata=bearer(self.token),  # a token used up by the payment still reads it
        ).reservation


def create_concert(server: grpc.Channel, seats: int = 10) -> str:
    start = Timestamp()
    start.FromDatetime((datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0))
    reply = admin_pb2_grpc.AdminServiceStub(server).CreateConcert(
        admin_pb2.CreateConcertRequest(
            title="Module night",
            dates=[
                admin_pb2.ConcertDateSpec(
                    start_time=start,
                    seats=[
                        admin_pb2.SeatSpec(seat_number=n, price=PRICE) for n in range(1, seats + 1)
                    ],
                )
            ],
        ),
        metadata=ADMIN,
        timeout=30,
    )
    return str(reply.dates[0].date_id)


def pay_request(
    reservation_id: str, session_token: str, *, account_id: str = "", card: str = ""
) -> pm.PayReservationRequest:
    request = pm.PayReservationRequest(
        request_id=str(uuid.uuid4()),
        reservation_id=reservation_id,
        amount=PRICE,
        session_token=session_token,
    )
    if account_id:
        request.account_id = account_id
    else:
        request.card_number = card
    return request


def check_books(module_url: str, server_url: str) -> list[str]:
    """The two books agree: every charge the module took is either a payment the
    server recorded (with the module's id) or refunded, never both; every
    payment the server recorded from the module is a charge the module kept;
    every refund the server asked for is refunded at the module. A charge the
    server has not answered yet (still in the outbox) is reported too: call
    this once the books should have settled."""
    with psycopg.connect(module_url) as conn:
        charges = {
            str(row[0]): (row[1], row[2])
            for row in conn.execute(
                "SELECT payment_id, state, server_answer FROM payments WHERE state <> 'declined'"
            )
        }
        outbox = conn.execute("SELECT count(*) FROM callback_outbox").fetchone()
    with psycopg.connect(server_url) as conn:
        paid = {
            row[0]
            for row in conn.execute(
                "SELECT module_payment_id FROM payments WHERE module_id = %s", (MODULE,)
            )
        }
        refund_asked = {
            row[0]
            for row in conn.execute(
                "SELECT module_payment_id FROM module_refund_requests WHERE module_id = %s",
                (MODULE,),
            )
        }
    problems = []
    if outbox and outbox[0]:
        problems.append(f"{outbox[0]} callback(s) still unanswered")
    for payment_id, (state, answer) in charges.items():
        kept, refunded = payment_id in paid, state == "refunded"
        if kept and refunded:
            problems.append(f"{payment_id}: paid at the server and refunded")
        if not kept and not refunded:
            problems.append(f"{payment_id}: taken, neither paid at the server nor refunded")
        if kept and answer != "paid":
            problems.append(f"{payment_id}: paid at the server, module says {answer}")
    for payment_id in paid - charges.keys():
        problems.append(f"{payment_id}: paid at the server, no charge at the module")
    for payment_id in refund_asked:
        if charges.get(payment_id, ("", ""))[0] != "refunded":
            problems.append(f"{payment_id}: the server asked for a refund, not refunded")
    return problems
