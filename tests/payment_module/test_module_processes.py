"""The sandbox payment module and the concert server as separate OS processes
talking gRPC, each over its own real PostgreSQL database: a fan pays at the
module and the server learns it by the module's callback. Faults: a lapsed
hold, the server down when the module calls back, kill -9 of the module with
a callback pending, kill -9 of the server after it recorded a payment whose
answer was lost. Each test ends with the cross-book check."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from paymentmodule.v1 import payment_module_pb2 as pm
from paymentmodule.v1 import payment_module_pb2_grpc

from concert.v1 import payment_pb2, reservation_pb2
from tests.e2e.servers import ServerProcess
from tests.payment_module.processes import (
    PRICE,
    Fan,
    check_books,
    create_concert,
    pay_request,
    start_concert_server,
    start_module,
    wait_until,
)
from tests.payment_modules import MODULE, secrets_file
from tests.support import Stubs, bearer

pytestmark = pytest.mark.slow

HELD = reservation_pb2.RESERVATION_STATE_HELD
PAID_STATE = reservation_pb2.RESERVATION_STATE_PAID


@dataclass
class Books:
    """Both processes, their databases and how to restart them."""

    server_url: str
    module_url: str
    secrets: Path
    logs: Path
    server: ServerProcess
    module: ServerProcess
    restarts: int = 0

    def restart_server(self) -> None:
        self.restarts += 1
        self.server = start_concert_server(
            f"server-{self.restarts}",
            self.server_url,
            self.secrets,
            self.logs,
            port=self.server.port,
        )
        self.server.wait_ready()

    def restart_module(self) -> None:
        self.restarts += 1
        self.module = start_module(
            f"module-{self.restarts}",
            self.module_url,
            self.module.env["CONCERT_PAYMENT_MODULE_SERVER"],
            self.secrets,
            self.logs,
            port=self.module.port,
        )
        self.module.wait_ready()

    def server_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.server.address)

    def module_stub(self) -> payment_module_pb2_grpc.PaymentModuleServiceStub:
        return payment_module_pb2_grpc.PaymentModuleServiceStub(
            grpc.insecure_channel(self.module.address)
        )

    def module_payment(self, payment_id: str) -> pm.ModulePayment:
        return (
            self.module_stub()
            .GetModulePayment(pm.GetModulePaymentRequest(payment_id=payment_id), timeout=5)
            .payment
        )

    def wait_answer(self, payment_id: str, timeout: float = 30.0) -> pm.ModulePayment:
        def answered() -> pm.ModulePayment | None:
            payment = self.module_payment(payment_id)
            return payment if payment.server_answer != pm.SERVER_ANSWER_PENDING else None

        found = wait_until(answered, f"the server's answer to {payment_id}", timeout)
        assert isinstance(found, pm.ModulePayment)
        return found

    def settled(self) -> None:
        """The cross-book check, once the outbox has drained."""
        wait_until(lambda: not check_books(self.module_url, self.server_url), "books settle")
        assert check_books(self.module_url, self.server_url) == []


@pytest.fixture
def books(create_database: Callable[[], str], tmp_path: Path) -> Iterator[Books]:
    server_url, module_url = create_database(), create_database()
    secrets = secrets_file(tmp_path)
    server = start_concert_server("server", server_url, secrets, tmp_path)
    server.wait_ready()
    module = start_module("module", module_url, server.address, secrets, tmp_path)
    pair = Books(server_url, module_url, secrets, tmp_path, server, module)
    try:
        module.wait_ready()
        yield pair
    finally:
        for process in (pair.module, pair.server):
            if process.alive():
                code = process.stop()
                assert code == 0, f"{process.name} exit code {code}:\n{process.log[-4000:]}"


def server_payments(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (str(row[0]), row[1])
            for row in conn.execute("SELECT reservation_id, module_payment_id FROM payments")
        ]


def test_a_fan_pays_at_the_module_and_the_seat_is_sold(books: Books) -> None:
    with books.server_channel() as channel:
        date_id = create_concert(channel)
        fan = Fan(channel)
        reservation_id = fan.hold(date_id, 3)
        module = books.module_stub()
        module.TopUp(
            pm.TopUpRequest(account_id="fan-a", amount=8_000, request_id=str(uuid.uuid4()))
        )
        taken = module.PayReservation(
            pay_request(reservation_id, fan.session_token, account_id="fan-a")
        ).payment
        assert taken.state == pm.MODULE_PAYMENT_STATE_SUCCEEDED
        payment = books.wait_answer(taken.payment_id)
        assert payment.server_answer == pm.SERVER_ANSWER_PAID
        assert payment.state == pm.MODULE_PAYMENT_STATE_SUCCEEDED
        assert module.GetBalance(pm.GetBalanceRequest(account_id="fan-a")).balance == 3_000
        assert fan.reservation(reservation_id).state == PAID_STATE
        recorded = fan.stubs.payment.GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=payment.server_payment_id),
            metadata=bearer(fan.token),
        ).payment
        assert (recorded.payment_module, recorded.module_payment_id) == (MODULE, taken.payment_id)
        assert recorded.amount == PRICE
    with psycopg.connect(books.server_url) as conn:
        assert conn.execute(
            "SELECT sold FROM seats WHERE date_id = %s AND seat_number = 3", (date_id,)
        ).fetchone() == (True,)
    books.settled()


def test_a_fan_whose_hold_lapsed_gets_the_money_back(books: Books) -> None:
    with books.server_channel() as channel:
        date_id = create_concert(channel)
        fan = Fan(channel)
        reservation_id = fan.hold(date_id, 4)
        # The hold lapses while the fan pays (its expiry moved into the past:
        # the server's clock is its own, so the test moves the hold instead).
        with psycopg.connect(books.server_url) as conn:
            conn.execute(
                "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = %s",
                (reservation_id,),
            )
            conn.execute(
                "UPDATE seats SET held_until = now() - interval '1 second'"
                " WHERE reservation_id = %s",
                (reservation_id,),
            )
        module = books.module_stub()
        taken = module.PayReservation(
            pay_request(reservation_id, fan.session_token, card="4242424242424242")
        ).payment
        payment = books.wait_answer(taken.payment_id)
        assert payment.server_answer == pm.SERVER_ANSWER_REFUND
        assert payment.state == pm.MODULE_PAYMENT_STATE_REFUNDED
        assert payment.refund_reason == "RESERVATION_NOT_HELD"
        assert fan.reservation(reservation_id).state != PAID_STATE
    assert server_payments(books.server_url) == []
    books.settled()


def test_a_balance_payment_refunded_returns_to_the_balance(books: Books) -> None:
    with books.server_channel() as channel:
        date_id = create_concert(channel)
        fan = Fan(channel)
        reservation_id = fan.hold(date_id, 5)
        module = books.module_stub()
        module.TopUp(
            pm.TopUpRequest(account_id="fan-b", amount=PRICE, request_id=str(uuid.uuid4()))
        )
        # The wrong amount: the server keeps nothing and asks for a refund.
        request = pay_request(reservation_id, fan.session_token, account_id="fan-b")
        request.amount = PRICE - 1
        taken = module.PayReservation(request).payment
        # Taken, leaving 1; unless the callback was already answered REFUND and
        # the money given back in the transaction that ended it.
        left = module.GetBalance(pm.GetBalanceRequest(account_id="fan-b")).balance
        if left != 1:
            assert left == PRICE
            assert (
                module.GetModulePayment(
                    pm.GetModulePaymentRequest(payment_id=taken.payment_id)
                ).payment.state
                == pm.MODULE_PAYMENT_STATE_REFUNDED
            )
        payment = books.wait_answer(taken.payment_id)
        assert (payment.state, payment.refund_reason) == (
            pm.MODULE_PAYMENT_STATE_REFUNDED,
            "AMOUNT_MISMATCH",
        )
        assert module.GetBalance(pm.GetBalanceRequest(account_id="fan-b")).balance == PRICE
        assert fan.reservation(reservation_id).state == HELD
    books.settled()


def test_the_server_down_at_callback_time_is_retried_until_it_answers(books: Books) -> None:
    with books.server_channel() as channel:
        date_id = create_concert(channel)
        fan = Fan(channel)
        reservation_id = fan.hold(date_id, 6)
    assert books.server.stop() == 0
    module = books.module_stub()
    taken = module.PayReservation(
        pay_request(reservation_id, fan.session_token, card="4242424242424242")
    ).payment
    # The module keeps trying while the server is away.
    wait_until(
        lambda: books.module_payment(taken.payment_id).callback_attempts >= 3,
        "three failed callback attempts",
    )
    assert books.module_payment(taken.payment_id).server_answer == pm.SERVER_ANSWER_PENDING
    books.restart_server()
    payment = books.wait_answer(taken.payment_id)
    assert payment.server_answer == pm.SERVER_ANSWER_PAID
    with books.server_channel() as channel:
        fan.stubs = Stubs.on(channel)  # type: ignore[arg-type]  # the restarted server
        assert fan.reservation(reservation_id).state == PAID_STATE
    assert server_payments(books.server_url) == [(reservation_id, taken.payment_id)]
    books.settled()


def test_the_module_killed_with_a_callback_pending_reports_it_after_restart(books: Books) -> None:
    with books.server_channel() as channel:
        date_id = create_concert(channel)
        fan = Fan(channel)
        reservation_id = fan.hold(date_id, 7)
    assert books.server.stop() == 0  # so the callback is still pending when the module dies
    taken = (
        books.module_stub()
        .PayReservation(pay_request(reservation_id, fan.session_token, card="4242424242424242"))
        .payment
    )
    wait_until(
        lambda: books.module_payment(taken.payment_id).callback_attempts >= 1,
        "a first callback attempt",
    )
    books.module.kill()
    books.restart_server()
    books.restart_module()
    payment = books.wait_answer(taken.payment_id)
    assert payment.server_answer == pm.SERVER_ANSWER_PAID
    assert server_payments(books.server_url) == [(reservation_id, taken.payment_id)]
    books.settled()


def test_the_server_killed_after_recording_gives_the_retry_its_first_answer(
    books: Books,
) -> None:
    """The server commits the payment, then dies before its answer leaves: the
    test holds the date's row so the server's last statement (sent with its
    COMMIT) waits, freezes the server (SIGSTOP), lets PostgreSQL commit, and
    kills -9 the frozen server. The restarted server answers the module's
    retry with the first answer: one payment, kept."""
    with books.server_channel() as channel:
        date_id = create_concert(channel)
        fan = Fan(channel)
        reservation_id = fan.hold(date_id, 8)
    with psycopg.connect(books.server_url) as blocker:
        blocker.execute("SELECT 1 FROM concert_dates WHERE id = %s FOR UPDATE", (date_id,))
        taken = (
            books.module_stub()
            .PayReservation(pay_request(reservation_id, fan.session_token, card="4242424242424242"))
            .payment
        )
        wait_until(
            lambda: server_waits_on_a_lock(books.server_url),
            "the server's sale waiting for the date's row",
        )
        books.server.process.send_signal(signal.SIGSTOP)
        blocker.commit()  # the server's COMMIT, already sent, goes through
    wait_until(lambda: server_payments(books.server_url), "the server recorded the payment")
    books.server.kill()
    assert books.module_payment(taken.payment_id).server_answer == pm.SERVER_ANSWER_PENDING
    books.restart_server()
    payment = books.wait_answer(taken.payment_id)
    assert payment.server_answer == pm.SERVER_ANSWER_PAID
    assert payment.callback_attempts >= 2
    assert server_payments(books.server_url) == [(reservation_id, taken.payment_id)]
    books.settled()


def server_waits_on_a_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'concert' AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])
