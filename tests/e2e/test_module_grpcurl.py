"""A fan pays through the sandbox payment module, driven by grpcurl alone.

The concert server and the module run as two processes over two databases
(tests/e2e/module_pair.py); grpcurl reaches both by reflection, with no proto
files on the client side, as README's "Paying through the payment module"
shows. A fan signs in at the server, holds a seat, tops up at the module and
pays there; the module calls the server back, and the fan learns the outcome
from both: a sold seat, or (the hold lapsed) the money back. Each flow ends
with both databases read and the two books checked against each other.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.e2e.grpcurl import Grpcurl
from tests.e2e.module_pair import ModulePair
from tests.e2e.test_grpcurl import Fan, create_concert, new_fan
from tests.payment_module.processes import wait_until
from tests.payment_modules import MODULE

PRICE = 5000
SUCCESS_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


@pytest.fixture(scope="module")
def server(module_pair: ModulePair) -> Grpcurl:
    return Grpcurl(module_pair.server.address)


@pytest.fixture(scope="module")
def module(module_pair: ModulePair) -> Grpcurl:
    return Grpcurl(module_pair.module.address, "paymentmodule.v1")


@pytest.fixture(scope="module")
def date_id(server: Grpcurl) -> str:
    concert = create_concert(server, price=PRICE)
    return str(concert["dates"][0]["date_id"])


def hold(server: Grpcurl, fan: Fan, date_id: str, seat: int) -> dict[str, Any]:
    body = {"date_id": date_id, "seat_number": seat, "request_id": str(uuid.uuid4())}
    held: dict[str, Any] = server.call("ReservationService/ReserveSeat", body, fan.token)[
        "reservation"
    ]
    assert (held["state"], held["price"]) == ("RESERVATION_STATE_HELD", str(PRICE))
    return held


def top_up(module: Grpcurl, account_id: str, amount: int) -> int:
    body = {"account_id": account_id, "amount": amount, "request_id": str(uuid.uuid4())}
    return int(module.call("PaymentModuleService/TopUp", body)["balance"])


def balance(module: Grpcurl, account_id: str) -> int:
    return int(
        module.call("PaymentModuleService/GetBalance", {"account_id": account_id})["balance"]
    )


def pay_body(reservation_id: str, fan: Fan, **source: str) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "reservation_id": reservation_id,
        "amount": PRICE,
        "session_token": fan.session_token,
        **source,
    }


def answered(module: Grpcurl, payment_id: str) -> dict[str, Any]:
    """The module's payment once the server has answered its callback."""

    def read() -> dict[str, Any] | None:
        payment: dict[str, Any] = module.call(
            "PaymentModuleService/GetModulePayment", {"payment_id": payment_id}
        )["payment"]
        return None if payment["server_answer"] == "SERVER_ANSWER_PENDING" else payment

    found = wait_until(read, f"the server's answer to module payment {payment_id}")
    assert isinstance(found, dict)
    return found


def test_the_module_serves_reflection_and_health(module: Grpcurl) -> None:
    listed = module.reflect("list").split()
    assert "paymentmodule.v1.PaymentModuleService" in listed
    assert "grpc.health.v1.Health" in listed
    assert any(name.startswith("grpc.reflection.") for name in listed), listed
    # Reflection serves the messages too (and the Timestamp they import).
    described = module.reflect("describe", "paymentmodule.v1.ModulePayment")
    assert "google.protobuf.Timestamp refund_time" in described, described
    health = Grpcurl(module.address, "grpc.health.v1")
    for service in ("", "paymentmodule.v1.PaymentModuleService"):
        assert health.call("Health/Check", {"service": service}) == {"status": "SERVING"}


def test_a_fan_pays_at_the_module_and_the_seat_is_sold(
    module_pair: ModulePair, server: Grpcurl, module: Grpcurl, date_id: str
) -> None:
    fan = new_fan(server)
    held = hold(server, fan, date_id, 1)
    reservation_id = held["reservation_id"]
    account = f"fan-{uuid.uuid4().hex[:12]}"
    assert balance(module, account) == 0
    assert top_up(module, account, PRICE + 1500) == PRICE + 1500

    body = pay_body(reservation_id, fan, account_id=account)
    taken = module.call("PaymentModuleService/PayReservation", body)["payment"]
    assert taken["state"] == "MODULE_PAYMENT_STATE_SUCCEEDED"
    assert (taken["reservation_id"], taken["amount"], taken["account_id"]) == (
        reservation_id,
        str(PRICE),
        account,
    )
    assert taken["server_answer"] in {"SERVER_ANSWER_PENDING", "SERVER_ANSWER_PAID"}
    payment_id = taken["payment_id"]
    # A retry of the same request takes nothing more and names the same payment.
    again = module.call("PaymentModuleService/PayReservation", body)["payment"]
    assert again["payment_id"] == payment_id
    assert balance(module, account) == 1500

    # The module's book: the server kept the money.
    paid = answered(module, payment_id)
    assert (paid["state"], paid["server_answer"]) == (
        "MODULE_PAYMENT_STATE_SUCCEEDED",
        "SERVER_ANSWER_PAID",
    )
    assert paid["refund_reason"] == "" and int(paid["callback_attempts"]) >= 1
    assert balance(module, account) == 1500

    # The server's book, as the fan reads it (with the token the payment used up).
    recorded = server.call(
        "PaymentService/GetModulePayment",
        {"payment_module": MODULE, "module_payment_id": payment_id},
        fan.token,
    )["payment"]
    assert recorded["state"] == "PAYMENT_STATE_COMPLETED"
    assert recorded["payment_id"] == paid["server_payment_id"]
    assert (recorded["payment_module"], recorded["module_payment_id"]) == (MODULE, payment_id)
    assert (recorded["reservation_id"], recorded["user_id"], recorded["amount"]) == (
        reservation_id,
        fan.user_id,
        str(PRICE),
    )
    assert recorded["refund_reason"] == ""
    assert (
        server.call("PaymentService/GetPayment", {"payment_id": recorded["payment_id"]}, fan.token)[
            "payment"
        ]
        == recorded
    )
    reservation = server.call(
        "ReservationService/GetReservation", {"reservation_id": reservation_id}, fan.token
    )["reservation"]
    assert reservation["state"] == "RESERVATION_STATE_PAID"
    # The callback completed the fan's queue token, as a wallet payment does.
    server.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": date_id, "seat_number": 2},
        fan.token,
        "FAILED_PRECONDITION",
        "TOKEN_COMPLETED",
    )
    token = server.call("QueueService/IssueToken", {"session_token": fan.session_token})["token"]
    seats = server.call("ConcertService/ListAvailableSeats", {"date_id": date_id}, token)
    assert 1 not in {s["seat_number"] for s in seats["seats"]}

    with psycopg.connect(module_pair.server_url) as conn:
        assert conn.execute(
            "SELECT sold, reservation_id::text FROM seats WHERE date_id = %s AND seat_number = 1",
            (date_id,),
        ).fetchone() == (True, reservation_id)
        assert conn.execute(
            "SELECT id::text, module_id, amount FROM payments WHERE module_payment_id = %s",
            (payment_id,),
        ).fetchall() == [(recorded["payment_id"], MODULE, PRICE)]
    module_pair.settled()


def test_a_fan_whose_hold_lapsed_gets_the_money_back(
    module_pair: ModulePair, server: Grpcurl, module: Grpcurl, date_id: str
) -> None:
    fan = new_fan(server)
    reservation_id = hold(server, fan, date_id, 3)["reservation_id"]
    account = f"fan-{uuid.uuid4().hex[:12]}"
    top_up(module, account, PRICE)
    module_pair.lapse_hold(reservation_id)

    taken = module.call(
        "PaymentModuleService/PayReservation", pay_body(reservation_id, fan, account_id=account)
    )["payment"]
    assert taken["state"] == "MODULE_PAYMENT_STATE_SUCCEEDED"  # the module cannot know yet
    payment_id = taken["payment_id"]

    refunded = answered(module, payment_id)
    assert (refunded["state"], refunded["server_answer"], refunded["refund_reason"]) == (
        "MODULE_PAYMENT_STATE_REFUNDED",
        "SERVER_ANSWER_REFUND",
        "RESERVATION_NOT_HELD",
    )
    assert refunded["server_payment_id"] == ""
    assert refunded["refund_time"].endswith("Z")
    assert balance(module, account) == PRICE  # the money is back

    # The server's word on it: refunded, and why.
    seen = server.call(
        "PaymentService/GetModulePayment",
        {"payment_module": MODULE, "module_payment_id": payment_id},
        fan.token,
    )["payment"]
    assert (seen["state"], seen["refund_reason"]) == (
        "PAYMENT_STATE_REFUNDED",
        "RESERVATION_NOT_HELD",
    )
    assert (seen["payment_module"], seen["module_payment_id"], seen["amount"]) == (
        MODULE,
        payment_id,
        str(PRICE),
    )
    assert (seen["reservation_id"], seen["user_id"]) == (reservation_id, fan.user_id)
    reservation = server.call(
        "ReservationService/GetReservation", {"reservation_id": reservation_id}, fan.token
    )["reservation"]
    assert reservation["state"] in {"RESERVATION_STATE_HELD", "RESERVATION_STATE_EXPIRED"}
    # Nothing was bought: the fan's token is still admitted.
    status = server.call("QueueService/GetQueueStatus", {}, fan.token)["status"]
    assert status["state"] == "QUEUE_TOKEN_STATE_ADMITTED"

    with psycopg.connect(module_pair.server_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM payments WHERE reservation_id = %s", (reservation_id,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT sold FROM seats WHERE date_id = %s AND seat_number = 3", (date_id,)
        ).fetchone() == (False,)
        assert conn.execute(
            "SELECT reason, amount FROM module_refund_requests"
            " WHERE module_id = %s AND module_payment_id = %s",
            (MODULE, payment_id),
        ).fetchall() == [("RESERVATION_NOT_HELD", PRICE)]
    module_pair.settled()


def test_declines_and_refusals_carry_their_reasons(
    server: Grpcurl, module: Grpcurl, date_id: str
) -> None:
    """What grpcurl shows when the module says no: a decline is an answer, an
    error carries ErrorInfo (and BadRequest for bad fields)."""
    fan = new_fan(server)
    reservation_id = hold(server, fan, date_id, 4)["reservation_id"]
    declined = module.call(
        "PaymentModuleService/PayReservation",
        pay_body(reservation_id, fan, card_number=DECLINED_CARD),
    )["payment"]
    assert (declined["state"], declined["decline_reason"], declined["server_answer"]) == (
        "MODULE_PAYMENT_STATE_DECLINED",
        "CARD_DECLINED",
        "SERVER_ANSWER_NOT_REPORTED",
    )
    assert declined["card_last4"] == DECLINED_CARD[-4:]

    bad = module.expect_error(
        "PaymentModuleService/PayReservation",
        {"request_id": "nope", "reservation_id": "nope", "amount": 0, "card_number": "1234"},
        None,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert {"request_id", "reservation_id", "amount", "session_token"} <= bad.bad_fields
    module.expect_error(
        "PaymentModuleService/GetModulePayment",
        {"payment_id": str(uuid.uuid4())},
        None,
        "NOT_FOUND",
        "PAYMENT_NOT_FOUND",
    )
    # Only the merchant may ask for a refund (signed), not the fan.
    taken = module.call(
        "PaymentModuleService/PayReservation",
        pay_body(reservation_id, fan, card_number=SUCCESS_CARD),
    )["payment"]
    module.expect_error(
        "PaymentModuleService/RefundPayment",
        {"payment_id": taken["payment_id"], "request_id": str(uuid.uuid4())},
        fan.session_token,
        "UNAUTHENTICATED",
        "MODULE_SIGNATURE_INVALID",
    )
    assert answered(module, taken["payment_id"])["server_answer"] == "SERVER_ANSWER_PAID"
    # The server's callback refuses a fan's credential: only modules may call it.
    server.expect_error(
        "PaymentCallbackService/ConfirmModulePayment",
        {
            "module_payment_id": taken["payment_id"],
            "reservation_id": reservation_id,
            "amount": PRICE,
            "session_token": fan.session_token,
        },
        fan.token,
        "UNAUTHENTICATED",
        "MODULE_SIGNATURE_INVALID",
    )
    # A payment the module never reported is not found at the server.
    server.expect_error(
        "PaymentService/GetModulePayment",
        {"payment_module": MODULE, "module_payment_id": str(uuid.uuid4())},
        fan.token,
        "NOT_FOUND",
        "PAYMENT_NOT_FOUND",
    )
