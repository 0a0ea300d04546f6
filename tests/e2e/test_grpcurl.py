"""Every concert.v1 method through grpcurl against a real server process, reflection only.

No proto files and no generated code on the client side: what an operator
with grpcurl sees is what these tests check, the success path of each method
and its main error paths (status code and the ErrorInfo reason).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from concert.v1 import wallet_pb2, wallet_pb2_grpc
from server.accounts.throttle import PAIR_LIMIT
from tests.e2e.grpcurl import CODES, Grpcurl
from tests.e2e.servers import ServerProcess
from tests.support import ADMIN, TEST_ADMIN_KEY

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def grpcurl(server: ServerProcess) -> Grpcurl:
    return Grpcurl(server.address)


@dataclass
class Fan:
    user_id: str
    email: str
    session_token: str
    token: str  # an admitted queue token


def new_fan(grpcurl: Grpcurl) -> Fan:
    email = f"fan-{uuid.uuid4().hex[:12]}@example.com"
    signed_up = grpcurl.call("AccountService/SignUp", {"email": email, "password": PASSWORD})
    session = grpcurl.call("AccountService/SignIn", {"email": email, "password": PASSWORD})
    issued = grpcurl.call("QueueService/IssueToken", {"session_token": session["session_token"]})
    assert issued["status"]["state"] == "QUEUE_TOKEN_STATE_ADMITTED", issued
    return Fan(signed_up["user_id"], email, session["session_token"], issued["token"])


def create_concert(grpcurl: Grpcurl, seats: int = 6, price: int = 5000) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    return grpcurl.call(
        "AdminService/CreateConcert",
        {
            "title": "Night at the Opera",
            "venue": "Main Hall",
            "dates": [
                {
                    "start_time": (start + timedelta(days=d)).isoformat().replace("+00:00", "Z"),
                    "seats": [{"seat_number": n, "price": price} for n in range(1, seats + 1)],
                }
                for d in range(2)
            ],
        },
        TEST_ADMIN_KEY,
    )


@pytest.fixture(scope="module")
def concert(grpcurl: Grpcurl) -> dict[str, Any]:
    return create_concert(grpcurl)


def test_reflection_lists_every_service(grpcurl: Grpcurl) -> None:
    listed = grpcurl.reflect("list").split()
    for service in ("Account", "Queue", "Concert", "Reservation", "Payment", "Wallet", "Admin"):
        assert f"concert.v1.{service}Service" in listed


def test_reflection_describes_with_the_protos_comments(grpcurl: Grpcurl) -> None:
    described = grpcurl.reflect("describe", "concert.v1.PaymentService")
    assert "rpc Pay ( .concert.v1.PayRequest ) returns ( .concert.v1.PayResponse );" in described
    assert "// PaymentService" in described
    assert "Errors:" in described


def test_account_sign_up_and_sign_in(grpcurl: Grpcurl) -> None:
    email = f"Fan-{uuid.uuid4().hex[:8]}@Example.com"
    request_id = str(uuid.uuid4())
    body = {"email": email, "password": PASSWORD, "request_id": request_id}
    signed_up = grpcurl.call("AccountService/SignUp", body)
    assert uuid.UUID(signed_up["user_id"])
    assert signed_up["email"].lower() == email.lower()
    assert signed_up["create_time"].endswith("Z")
    # A retry with the same request id answers the first answer again.
    assert grpcurl.call("AccountService/SignUp", body) == signed_up

    taken = {"email": email, "password": PASSWORD}
    grpcurl.expect_error("AccountService/SignUp", taken, None, "ALREADY_EXISTS", "EMAIL_TAKEN")
    bad = grpcurl.expect_error(
        "AccountService/SignUp",
        {"email": "not-an-email", "password": "short", "request_id": "nope"},
        None,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert bad.bad_fields == {"email", "password", "request_id"}

    session = grpcurl.call("AccountService/SignIn", {"email": email, "password": PASSWORD})
    assert session["user_id"] == signed_up["user_id"]
    assert session["session_token"]
    assert datetime.fromisoformat(session["expire_time"]) > datetime.now(UTC)

    wrong = {"email": email, "password": "wrong password!"}
    grpcurl.expect_error(
        "AccountService/SignIn", wrong, None, "UNAUTHENTICATED", "INVALID_CREDENTIALS"
    )
    unknown = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    grpcurl.expect_error(
        "AccountService/SignIn", unknown, None, "UNAUTHENTICATED", "INVALID_CREDENTIALS"
    )
    empty = grpcurl.expect_error(
        "AccountService/SignIn", {}, None, "INVALID_ARGUMENT", "INVALID_ARGUMENT"
    )
    assert empty.bad_fields == {"email", "password"}


def test_sign_in_throttled_after_repeated_failures(grpcurl: Grpcurl) -> None:
    email = f"fan-{uuid.uuid4().hex[:12]}@example.com"
    grpcurl.call("AccountService/SignUp", {"email": email, "password": PASSWORD})
    wrong = {"email": email, "password": "wrong password!"}
    for _ in range(PAIR_LIMIT):  # from this address
        grpcurl.expect_error(
            "AccountService/SignIn", wrong, None, "UNAUTHENTICATED", "INVALID_CREDENTIALS"
        )
    throttled = grpcurl.expect_error(
        "AccountService/SignIn", wrong, None, "RESOURCE_EXHAUSTED", "TOO_MANY_ATTEMPTS"
    )
    retry = throttled.detail("RetryInfo")
    assert retry is not None and retry["retry_delay"].endswith("s"), throttled


def test_admin_methods_and_their_key(grpcurl: Grpcurl, concert: dict[str, Any]) -> None:
    assert concert["concert"]["title"] == "Night at the Opera"
    assert concert["concert"]["venue"] == "Main Hall"
    assert len(concert["dates"]) == 2
    for date in concert["dates"]:
        assert date["concert_id"] == concert["concert"]["concert_id"]
        assert (date["available_seat_count"], date["total_seat_count"]) == (6, 6)

    grpcurl.expect_error(
        "AdminService/GetQueueStats", {}, None, "UNAUTHENTICATED", "ADMIN_KEY_MISSING"
    )
    grpcurl.expect_error(
        "AdminService/GetQueueStats",
        {},
        "not-the-admin-key-at-all",
        "PERMISSION_DENIED",
        "ADMIN_KEY_INVALID",
    )
    invalid = grpcurl.expect_error(
        "AdminService/CreateConcert",
        {"title": " ", "dates": [{"start_time": "2001-01-01T00:00:00Z", "seats": []}]},
        TEST_ADMIN_KEY,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert invalid.bad_fields == {"title", "dates[0].start_time", "dates[0].seats"}

    stats = grpcurl.call("AdminService/GetQueueStats", {}, TEST_ADMIN_KEY)
    assert set(stats) == {
        "issued_count",
        "completed_count",
        "admitted_count",
        "waiting_count",
        "capacity",
        "paused",
        "completed_by_payment_count",
        "lapsed_admitted_count",
        "lapsed_waiting_count",
        "lost_number_count",
        "window_end",
    }
    assert stats["capacity"] == 100 and stats["paused"] is False

    admission = grpcurl.call("AdminService/SetAdmission", {"capacity": 150}, TEST_ADMIN_KEY)
    assert (admission["capacity"], admission["paused"]) == (150, False)
    assert admission["update_time"].endswith("Z")
    grpcurl.expect_error(
        "AdminService/SetAdmission",
        {"capacity": -1},
        TEST_ADMIN_KEY,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    restored = grpcurl.call("AdminService/SetAdmission", {"capacity": 100}, TEST_ADMIN_KEY)
    assert restored["capacity"] == 100


def test_queue_issue_status_watch_refresh(grpcurl: Grpcurl) -> None:
    fan = new_fan(grpcurl)
    # The same fan, by password this time, gets the same place in line back.
    again = grpcurl.call(
        "QueueService/IssueToken", {"password": {"email": fan.email, "password": PASSWORD}}
    )
    status = grpcurl.call("QueueService/GetQueueStatus", {}, fan.token)
    assert again["status"]["queue_number"] == status["status"]["queue_number"]
    assert status["status"]["state"] == "QUEUE_TOKEN_STATE_ADMITTED"
    assert status["status"]["people_ahead"] == "0"
    assert status["token"]

    # An admitted token's watch says so once and ends.
    updates = grpcurl.stream("QueueService/WatchQueueStatus", {}, fan.token)
    assert [u["status"]["state"] for u in updates] == ["QUEUE_TOKEN_STATE_ADMITTED"]

    refreshed = grpcurl.call("QueueService/RefreshToken", {}, fan.token)
    assert refreshed["token"]
    assert refreshed["status"]["state"] == "QUEUE_TOKEN_STATE_ADMITTED"

    wrong = {"password": {"email": fan.email, "password": "wrong password!"}}
    grpcurl.expect_error(
        "QueueService/IssueToken", wrong, None, "UNAUTHENTICATED", "INVALID_CREDENTIALS"
    )
    grpcurl.expect_error(
        "QueueService/IssueToken",
        {"session_token": "forged.session.token"},
        None,
        "UNAUTHENTICATED",
        "INVALID_CREDENTIALS",
    )
    grpcurl.expect_error(
        "QueueService/IssueToken", {}, None, "INVALID_ARGUMENT", "INVALID_ARGUMENT"
    )
    for method in ("GetQueueStatus", "RefreshToken", "WatchQueueStatus"):
        grpcurl.expect_error(
            f"QueueService/{method}", {}, "forged-token", "UNAUTHENTICATED", "TOKEN_INVALID"
        )
        grpcurl.expect_error(f"QueueService/{method}", {}, None, "UNAUTHENTICATED", "TOKEN_INVALID")


def test_browsing(grpcurl: Grpcurl, concert: dict[str, Any]) -> None:
    fan = new_fan(grpcurl)
    concert_id = concert["concert"]["concert_id"]
    listed = grpcurl.call("ConcertService/ListConcerts", {"page_size": 1000}, fan.token)
    assert concert_id in {c["concert_id"] for c in listed["concerts"]}

    dates = grpcurl.call("ConcertService/ListAvailableDates", {"concert_id": concert_id}, fan.token)
    assert [d["date_id"] for d in dates["dates"]] == [d["date_id"] for d in concert["dates"]]
    assert dates["next_page_token"] == ""
    first = grpcurl.call(
        "ConcertService/ListAvailableDates", {"concert_id": concert_id, "page_size": 1}, fan.token
    )
    assert len(first["dates"]) == 1 and first["next_page_token"]
    second = grpcurl.call(
        "ConcertService/ListAvailableDates",
        {"concert_id": concert_id, "page_size": 1, "page_token": first["next_page_token"]},
        fan.token,
    )
    assert [d["date_id"] for d in first["dates"] + second["dates"]] == [
        d["date_id"] for d in concert["dates"]
    ]

    date_id = concert["dates"][1]["date_id"]
    seats = grpcurl.call("ConcertService/ListAvailableSeats", {"date_id": date_id}, fan.token)
    assert [(s["seat_number"], s["price"]) for s in seats["seats"]] == [
        (n, "5000") for n in range(1, 7)
    ]

    grpcurl.expect_error(
        "ConcertService/ListConcerts", {}, None, "UNAUTHENTICATED", "TOKEN_INVALID"
    )
    negative = grpcurl.expect_error(
        "ConcertService/ListConcerts",
        {"page_size": -1},
        fan.token,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert negative.bad_fields == {"page_size"}
    grpcurl.expect_error(
        "ConcertService/ListAvailableDates",
        {"concert_id": str(uuid.uuid4())},
        fan.token,
        "NOT_FOUND",
        "CONCERT_NOT_FOUND",
    )
    malformed = grpcurl.expect_error(
        "ConcertService/ListAvailableDates",
        {"concert_id": "nope", "page_token": "garbage"},
        fan.token,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert malformed.bad_fields == {"concert_id", "page_token"}
    grpcurl.expect_error(
        "ConcertService/ListAvailableSeats",
        {"date_id": str(uuid.uuid4())},
        fan.token,
        "NOT_FOUND",
        "DATE_NOT_FOUND",
    )


def test_reservations(grpcurl: Grpcurl) -> None:
    concert = create_concert(grpcurl)
    date_id = concert["dates"][0]["date_id"]
    fan, rival = new_fan(grpcurl), new_fan(grpcurl)

    request_id = str(uuid.uuid4())
    body = {"date_id": date_id, "seat_number": 1, "request_id": request_id}
    held = grpcurl.call("ReservationService/ReserveSeat", body, fan.token)["reservation"]
    assert held["state"] == "RESERVATION_STATE_HELD"
    assert (held["user_id"], held["date_id"], held["seat_number"], held["price"]) == (
        fan.user_id,
        date_id,
        1,
        "5000",
    )
    assert held["concert_id"] == concert["concert"]["concert_id"]
    assert held["expire_time"] > held["create_time"]
    again = grpcurl.call("ReservationService/ReserveSeat", body, fan.token)["reservation"]
    assert again["reservation_id"] == held["reservation_id"]

    seats = grpcurl.call("ConcertService/ListAvailableSeats", {"date_id": date_id}, fan.token)
    assert 1 not in {s["seat_number"] for s in seats["seats"]}

    grpcurl.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": date_id, "seat_number": 1},
        rival.token,
        "ALREADY_EXISTS",
        "SEAT_UNAVAILABLE",
    )
    grpcurl.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": date_id, "seat_number": 99},
        rival.token,
        "NOT_FOUND",
        "SEAT_NOT_FOUND",
    )
    invalid = grpcurl.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": "nope", "seat_number": 0},
        rival.token,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert invalid.bad_fields == {"date_id", "seat_number"}
    grpcurl.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": date_id, "seat_number": 2},
        None,
        "UNAUTHENTICATED",
        "TOKEN_INVALID",
    )

    reservation_id = held["reservation_id"]
    shown = grpcurl.call(
        "ReservationService/GetReservation", {"reservation_id": reservation_id}, fan.token
    )
    assert shown["reservation"] == held
    # Someone else's reservation is not told apart from a missing one.
    for credential, wanted in ((rival.token, reservation_id), (fan.token, str(uuid.uuid4()))):
        grpcurl.expect_error(
            "ReservationService/GetReservation",
            {"reservation_id": wanted},
            credential,
            "NOT_FOUND",
            "RESERVATION_NOT_FOUND",
        )
    grpcurl.expect_error(
        "ReservationService/CancelReservation",
        {"reservation_id": reservation_id},
        rival.token,
        "NOT_FOUND",
        "RESERVATION_NOT_FOUND",
    )

    cancelled = grpcurl.call(
        "ReservationService/CancelReservation", {"reservation_id": reservation_id}, fan.token
    )
    assert cancelled["reservation"]["state"] == "RESERVATION_STATE_CANCELLED"
    grpcurl.expect_error(
        "ReservationService/CancelReservation",
        {"reservation_id": reservation_id},
        fan.token,
        "FAILED_PRECONDITION",
        "RESERVATION_NOT_HELD",
    )
    # The seat is free again at once: the rival gets it.
    grpcurl.call(
        "ReservationService/ReserveSeat", {"date_id": date_id, "seat_number": 1}, rival.token
    )

    # The hold cap (4 by default): the fifth seat at once is refused.
    for seat in range(2, 6):
        grpcurl.call(
            "ReservationService/ReserveSeat", {"date_id": date_id, "seat_number": seat}, fan.token
        )
    grpcurl.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": date_id, "seat_number": 6},
        fan.token,
        "FAILED_PRECONDITION",
        "HOLD_LIMIT_REACHED",
    )


def test_wallet(grpcurl: Grpcurl) -> None:
    fan, other = new_fan(grpcurl), new_fan(grpcurl)
    empty = grpcurl.call("WalletService/GetBalance", {"user_id": fan.user_id}, fan.session_token)
    assert (empty["user_id"], empty["balance"]) == (fan.user_id, "0")

    request_id = str(uuid.uuid4())
    body = {"user_id": fan.user_id, "amount": 7000, "request_id": request_id}
    charged = grpcurl.call("WalletService/Charge", body, fan.session_token)
    assert (charged["user_id"], charged["balance"]) == (fan.user_id, "7000")
    assert int(charged["ledger_entry_id"]) > 0
    # A retry charges nothing more.
    assert grpcurl.call("WalletService/Charge", body, fan.session_token) == charged
    # The operator's key acts on any wallet.
    by_operator = grpcurl.call(
        "WalletService/Charge", {"user_id": fan.user_id, "amount": 500}, TEST_ADMIN_KEY
    )
    assert by_operator["balance"] == "7500"
    balance = grpcurl.call("WalletService/GetBalance", {"user_id": fan.user_id}, TEST_ADMIN_KEY)
    assert balance["balance"] == "7500" and balance["update_time"].endswith("Z")

    grpcurl.expect_error(
        "WalletService/Charge",
        {"user_id": fan.user_id, "amount": 1},
        other.session_token,
        "PERMISSION_DENIED",
        "NOT_WALLET_OWNER",
    )
    grpcurl.expect_error(
        "WalletService/GetBalance",
        {"user_id": fan.user_id},
        None,
        "UNAUTHENTICATED",
        "INVALID_CREDENTIALS",
    )
    grpcurl.expect_error(
        "WalletService/GetBalance",
        {"user_id": fan.user_id},
        fan.token,  # a queue token is not a session credential
        "UNAUTHENTICATED",
        "INVALID_CREDENTIALS",
    )
    missing = str(uuid.uuid4())
    grpcurl.expect_error(
        "WalletService/Charge",
        {"user_id": missing, "amount": 1},
        TEST_ADMIN_KEY,
        "NOT_FOUND",
        "USER_NOT_FOUND",
    )
    grpcurl.expect_error(
        "WalletService/GetBalance",
        {"user_id": missing},
        TEST_ADMIN_KEY,
        "NOT_FOUND",
        "USER_NOT_FOUND",
    )
    invalid = grpcurl.expect_error(
        "WalletService/Charge",
        {"user_id": fan.user_id, "amount": 0},
        TEST_ADMIN_KEY,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    assert invalid.bad_fields == {"amount"}
    # The upper bound (1,000,000,000): filled through the Python stubs (a hundred
    # grpcurl calls would cost seconds), the refusal seen through grpcurl.
    with grpc.insecure_channel(grpcurl.address) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        for _ in range(99):
            wallet.Charge(
                wallet_pb2.ChargeRequest(user_id=fan.user_id, amount=10_000_000),
                metadata=ADMIN,
                timeout=10,
            )
    full = grpcurl.call("WalletService/GetBalance", {"user_id": fan.user_id}, TEST_ADMIN_KEY)
    assert full["balance"] == str(7500 + 99 * 10_000_000)
    grpcurl.expect_error(
        "WalletService/Charge",
        {"user_id": fan.user_id, "amount": 10_000_000},
        fan.session_token,
        "FAILED_PRECONDITION",
        "BALANCE_LIMIT_EXCEEDED",
    )


def test_payment(grpcurl: Grpcurl) -> None:
    concert = create_concert(grpcurl, price=3000)
    date_id = concert["dates"][0]["date_id"]
    fan, other = new_fan(grpcurl), new_fan(grpcurl)
    held = grpcurl.call(
        "ReservationService/ReserveSeat", {"date_id": date_id, "seat_number": 3}, fan.token
    )["reservation"]
    pay = {"reservation_id": held["reservation_id"], "request_id": str(uuid.uuid4())}

    grpcurl.expect_error(
        "PaymentService/Pay", pay, fan.token, "FAILED_PRECONDITION", "INSUFFICIENT_BALANCE"
    )
    grpcurl.expect_error(
        "PaymentService/Pay", pay, other.token, "NOT_FOUND", "RESERVATION_NOT_FOUND"
    )
    grpcurl.expect_error("PaymentService/Pay", pay, None, "UNAUTHENTICATED", "TOKEN_INVALID")

    grpcurl.call(
        "WalletService/Charge", {"user_id": fan.user_id, "amount": 5000}, fan.session_token
    )
    payment = grpcurl.call("PaymentService/Pay", pay, fan.token)["payment"]
    assert payment["state"] == "PAYMENT_STATE_COMPLETED"
    assert (payment["reservation_id"], payment["user_id"], payment["amount"]) == (
        held["reservation_id"],
        fan.user_id,
        "3000",
    )
    balance = grpcurl.call("WalletService/GetBalance", {"user_id": fan.user_id}, fan.session_token)
    assert balance["balance"] == "2000"
    # A payment completes the fan's queue token: a status check, a refresh and a
    # new hold are refused.
    grpcurl.expect_error(
        "QueueService/RefreshToken", {}, fan.token, "FAILED_PRECONDITION", "TOKEN_COMPLETED"
    )
    grpcurl.expect_error(
        "ReservationService/ReserveSeat",
        {"date_id": date_id, "seat_number": 4},
        fan.token,
        "FAILED_PRECONDITION",
        "TOKEN_COMPLETED",
    )
    stats = grpcurl.call("AdminService/GetQueueStats", {}, TEST_ADMIN_KEY)
    assert int(stats["completed_count"]) >= 1

    # A fresh token of the same fan reads what was bought; a retry of the Pay
    # answers the same payment and charges nothing more.
    token = grpcurl.call("QueueService/IssueToken", {"session_token": fan.session_token})["token"]
    assert grpcurl.call("PaymentService/Pay", pay, token)["payment"] == payment
    balance = grpcurl.call("WalletService/GetBalance", {"user_id": fan.user_id}, fan.session_token)
    assert balance["balance"] == "2000"
    shown = grpcurl.call("PaymentService/GetPayment", {"payment_id": payment["payment_id"]}, token)[
        "payment"
    ]
    assert shown == payment
    reservation = grpcurl.call(
        "ReservationService/GetReservation", {"reservation_id": held["reservation_id"]}, token
    )["reservation"]
    assert reservation["state"] == "RESERVATION_STATE_PAID"
    seats = grpcurl.call("ConcertService/ListAvailableSeats", {"date_id": date_id}, token)
    assert 3 not in {s["seat_number"] for s in seats["seats"]}

    grpcurl.expect_error(
        "PaymentService/GetPayment",
        {"payment_id": payment["payment_id"]},
        other.token,
        "NOT_FOUND",
        "PAYMENT_NOT_FOUND",
    )
    grpcurl.expect_error(
        "PaymentService/GetPayment",
        {"payment_id": "nope"},
        token,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    grpcurl.expect_error(
        "ReservationService/CancelReservation",
        {"reservation_id": held["reservation_id"]},
        token,
        "FAILED_PRECONDITION",
        "RESERVATION_NOT_HELD",
    )


def test_waiting_fans_are_kept_out_until_admitted(grpcurl: Grpcurl) -> None:
    """Last: it closes the admission window, then opens it again."""
    # The window admits up to completed + capacity: shrink it to the tokens
    # issued so far, so the next fan waits, and pause it there.
    stats = grpcurl.call("AdminService/GetQueueStats", {}, TEST_ADMIN_KEY)
    capacity = int(stats["issued_count"]) - int(stats["completed_count"])
    grpcurl.call("AdminService/SetAdmission", {"capacity": capacity}, TEST_ADMIN_KEY)
    paused = grpcurl.call("AdminService/SetAdmission", {"paused": True}, TEST_ADMIN_KEY)
    assert (paused["capacity"], paused["paused"]) == (capacity, True)
    try:
        email = f"fan-{uuid.uuid4().hex[:12]}@example.com"
        grpcurl.call("AccountService/SignUp", {"email": email, "password": PASSWORD})
        issued = grpcurl.call(
            "QueueService/IssueToken", {"password": {"email": email, "password": PASSWORD}}
        )
        status = issued["status"]
        assert status["state"] == "QUEUE_TOKEN_STATE_WAITING"
        assert status["admission_paused"] is True
        refused = grpcurl.expect_error(
            "ConcertService/ListConcerts",
            {},
            issued["token"],
            "FAILED_PRECONDITION",
            "QUEUE_NOT_ADMITTED",
        )
        info = refused.detail("ErrorInfo")
        assert info is not None
        assert info["metadata"]["queue_number"] == status["queue_number"]
        assert refused.detail("RetryInfo") is not None
    finally:
        resumed = grpcurl.call(
            "AdminService/SetAdmission", {"capacity": 100, "paused": False}, TEST_ADMIN_KEY
        )
        assert (resumed["capacity"], resumed["paused"]) == (100, False)
    # Once resumed, the waiting fan is admitted and may browse.
    status = grpcurl.call("QueueService/GetQueueStatus", {}, issued["token"])
    assert status["status"]["state"] == "QUEUE_TOKEN_STATE_ADMITTED"
    grpcurl.call("ConcertService/ListConcerts", {}, status["token"])
    assert CODES["FAILED_PRECONDITION"] == refused.code
