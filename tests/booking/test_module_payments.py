"""PaymentCallbackService: a payment module reports the payment it took, and the
server records it (seat sold, token completed) or tells the module to refund.
Real PostgreSQL, real gRPC calls signed the way a module signs them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from concert.v1 import (
    payment_callback_pb2,
    payment_callback_pb2_grpc,
    payment_pb2,
    reservation_pb2,
)
from server.app import App
from server.config import Settings
from tests.booking.helpers import make_concert, scalar
from tests.fans import AdmittedFan, admitted_fan
from tests.payment_modules import MODULE, module_metadata, secrets_file
from tests.reliability.helpers import assert_invariants
from tests.support import Stubs, bearer, error_details

PRICE = 1_000
PAID = payment_callback_pb2.MODULE_PAYMENT_OUTCOME_PAID
REFUND = payment_callback_pb2.MODULE_PAYMENT_OUTCOME_REFUND

Metadata = Sequence[tuple[str, str]]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(payment_module_secrets_file=secrets_file(tmp_path))


@pytest.fixture
def callbacks(channel: grpc.aio.Channel) -> payment_callback_pb2_grpc.PaymentCallbackServiceStub:
    return payment_callback_pb2_grpc.PaymentCallbackServiceStub(channel)


def signed(
    app: App,
    request: payment_callback_pb2.ConfirmModulePaymentRequest,
    **options: Any,
) -> Metadata:
    return module_metadata(app.ctx.clock.now(), request, **options)


async def held_seat(app: App, stubs: Stubs, seats: int = 2) -> tuple[AdmittedFan, str]:
    concert = await make_concert(app.ctx, seats=seats, price=PRICE)
    fan = await admitted_fan(stubs)
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
        metadata=bearer(fan.token),
    )
    return fan, held.reservation.reservation_id


async def held_seat_for(app: App, stubs: Stubs, fan: AdmittedFan) -> tuple[AdmittedFan, str]:
    """A seat of a new concert held by an admitted fan."""
    concert = await make_concert(app.ctx, seats=1, price=PRICE)
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
        metadata=bearer(fan.token),
    )
    return fan, held.reservation.reservation_id


def callback(
    fan: AdmittedFan, reservation_id: str, *, amount: int = PRICE, module_payment_id: str = ""
) -> payment_callback_pb2.ConfirmModulePaymentRequest:
    return payment_callback_pb2.ConfirmModulePaymentRequest(
        module_payment_id=module_payment_id or f"mp-{uuid.uuid4()}",
        reservation_id=reservation_id,
        amount=amount,
        session_token=fan.session_token,
    )


async def books(app: App, reservation_id: str) -> dict[str, object]:
    async with app.ctx.pool.connection() as conn:
        return {
            "payments": await scalar(
                conn, "SELECT count(*) FROM payments WHERE reservation_id = %s", reservation_id
            ),
            "refund_requests": await scalar(
                conn,
                "SELECT count(*) FROM module_refund_requests WHERE reservation_id = %s",
                reservation_id,
            ),
            "reservation": await scalar(
                conn, "SELECT state FROM reservations WHERE id = %s", reservation_id
            ),
            "sold": await scalar(conn, "SELECT count(*) FROM seats WHERE sold"),
            "sold_count": await scalar(conn, "SELECT sum(sold_seat_count) FROM concert_dates"),
        }


async def test_a_module_payment_sells_the_seat_and_its_retry_gets_the_first_answer(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    fan, reservation_id = await held_seat(app, stubs)
    request = callback(fan, reservation_id)
    first = await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))
    assert first.outcome == PAID
    assert (first.payment.payment_module, first.payment.module_payment_id) == (
        MODULE,
        request.module_payment_id,
    )
    assert first.payment.amount == PRICE and first.payment.reservation_id == reservation_id
    # The module's retry, signed anew a minute later: the first answer, nothing more.
    app.ctx.clock.advance(60)  # type: ignore[attr-defined]
    again = await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))
    assert again == first
    assert await books(app, reservation_id) == {
        "payments": 1,
        "refund_requests": 0,
        "reservation": "paid",
        "sold": 1,
        "sold_count": 1,
    }
    # The fan sees it: the reservation paid, the payment with its module, the token used up.
    shown = await stubs.payment.GetPayment(
        payment_pb2.GetPaymentRequest(payment_id=first.payment.payment_id),
        metadata=bearer(fan.token),
    )
    assert shown.payment.payment_module == MODULE
    async with app.ctx.pool.connection() as conn:
        token_state = await scalar(
            conn, "SELECT state FROM queue_tokens WHERE user_id = %s", uuid.UUID(fan.user_id)
        )
        wallet_moves = await scalar(
            conn, "SELECT count(*) FROM wallet_ledger WHERE kind = 'payment'"
        )
    assert (token_state, wallet_moves) == ("completed", 0)  # the money was the module's
    await assert_invariants(app)


async def test_a_wrong_amount_a_lapsed_hold_or_another_fans_reservation_asks_for_a_refund(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    fan, reservation_id = await held_seat(app, stubs)
    other = await admitted_fan(stubs)

    async def outcome(request: payment_callback_pb2.ConfirmModulePaymentRequest) -> str:
        reply = await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))
        assert reply.outcome == REFUND and not reply.HasField("payment")
        return reply.refund_reason

    wrong_amount = callback(fan, reservation_id, amount=PRICE - 1)
    assert await outcome(wrong_amount) == "AMOUNT_MISMATCH"
    assert await outcome(wrong_amount) == "AMOUNT_MISMATCH"  # the retry: the same answer
    assert await outcome(callback(other, reservation_id)) == "RESERVATION_NOT_FOUND"
    app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]
    assert await outcome(callback(fan, reservation_id)) == "RESERVATION_NOT_HELD"
    assert await books(app, reservation_id) == {
        "payments": 0,
        "refund_requests": 3,
        "reservation": "held",  # lapsed; the expiry job writes it down later
        "sold": 0,
        "sold_count": 0,
    }
    await assert_invariants(app)


async def test_the_fan_learns_from_the_server_what_became_of_a_module_payment(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    fan, reservation_id = await held_seat(app, stubs)
    other = await admitted_fan(stubs)

    async def report(request: payment_callback_pb2.ConfirmModulePaymentRequest) -> None:
        await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))

    async def seen_by(
        who: AdmittedFan, module_payment_id: str, module: str = MODULE
    ) -> payment_pb2.Payment:
        reply = await stubs.payment.GetModulePayment(
            payment_pb2.GetModulePaymentRequest(
                payment_module=module, module_payment_id=module_payment_id
            ),
            metadata=bearer(who.token),
        )
        return reply.payment

    # Refused (the hold lapsed): a refunded payment, with why, for the payer only.
    app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]
    late = callback(fan, reservation_id)
    await report(late)
    refunded = await seen_by(fan, late.module_payment_id)
    assert (refunded.state, refunded.refund_reason, refunded.amount) == (
        payment_pb2.PAYMENT_STATE_REFUNDED,
        "RESERVATION_NOT_HELD",
        PRICE,
    )
    assert (refunded.payment_module, refunded.module_payment_id, refunded.reservation_id) == (
        MODULE,
        late.module_payment_id,
        reservation_id,
    )
    assert refunded.user_id == fan.user_id and refunded.payment_id
    by_id = await stubs.payment.GetPayment(
        payment_pb2.GetPaymentRequest(payment_id=refunded.payment_id), metadata=bearer(fan.token)
    )
    assert by_id.payment == refunded
    for who, module_payment_id, module in (
        (other, late.module_payment_id, MODULE),  # another fan's
        (fan, "never-reported", MODULE),  # not reported (yet)
        (fan, late.module_payment_id, "another-module"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await seen_by(who, module_payment_id, module)
        details = error_details(err.value)
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await seen_by(fan, "", "x" * 129)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(err.value).bad_fields == {"payment_module", "module_payment_id"}

    # Kept: the recorded payment, readable after the sale used the token up.
    _, second_reservation = await held_seat_for(app, stubs, other)
    kept = callback(other, second_reservation)
    answer = await callbacks.ConfirmModulePayment(kept, metadata=signed(app, kept))
    assert answer.outcome == PAID
    assert await seen_by(other, kept.module_payment_id) == answer.payment
    assert answer.payment.state == payment_pb2.PAYMENT_STATE_COMPLETED
    assert answer.payment.refund_reason == ""
    await assert_invariants(app)


async def test_only_a_configured_module_with_a_fresh_signature_may_call(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    fan, reservation_id = await held_seat(app, stubs)
    request = callback(fan, reservation_id)
    refused: list[Metadata] = [
        (),  # nothing
        bearer(fan.token),  # a fan's credential
        signed(app, request, secret=b"not the module's secret"),
        signed(app, request, module="unknown-module"),
        signed(app, request, skew=timedelta(minutes=-6)),  # stale
        signed(app, request, skew=timedelta(minutes=6)),  # from the future
        signed(app, callback(fan, reservation_id, amount=1)),  # another request's signature
    ]
    for metadata in refused:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await callbacks.ConfirmModulePayment(request, metadata=metadata)
        details = error_details(err.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "MODULE_SIGNATURE_INVALID",
        ), metadata
    assert (await books(app, reservation_id))["payments"] == 0
    # Within the window, it passes.
    reply = await callbacks.ConfirmModulePayment(
        request, metadata=signed(app, request, skew=timedelta(minutes=-4))
    )
    assert reply.outcome == PAID


async def test_a_hundred_callbacks_for_one_reservation_sell_it_once(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    """A hundred module payments for one reservation at once (a module paying twice,
    or many modules): one is recorded, every other is told to refund."""
    fan, reservation_id = await held_seat(app, stubs)
    requests = [callback(fan, reservation_id) for _ in range(100)]
    replies = await asyncio.gather(
        *(callbacks.ConfirmModulePayment(r, metadata=signed(app, r)) for r in requests)
    )
    outcomes = [reply.outcome for reply in replies]
    assert outcomes.count(PAID) == 1
    assert {reply.refund_reason for reply in replies if reply.outcome == REFUND} == {
        "RESERVATION_NOT_HELD"
    }
    assert await books(app, reservation_id) == {
        "payments": 1,
        "refund_requests": 99,
        "reservation": "paid",
        "sold": 1,
        "sold_count": 1,
    }
    await assert_invariants(app)


async def test_the_same_callback_sent_twenty_times_at_once_is_recorded_once(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    fan, reservation_id = await held_seat(app, stubs)
    request = callback(fan, reservation_id)
    replies = await asyncio.gather(
        *(callbacks.ConfirmModulePayment(request, metadata=signed(app, request)) for _ in range(20))
    )
    assert all(reply == replies[0] for reply in replies) and replies[0].outcome == PAID
    assert (await books(app, reservation_id))["payments"] == 1
    await assert_invariants(app)


async def test_a_module_payment_id_reused_for_another_payment_is_refused_by_name(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    fan, reservation_id = await held_seat(app, stubs)
    first = callback(fan, reservation_id, amount=PRICE - 1)  # refused: AMOUNT_MISMATCH
    await callbacks.ConfirmModulePayment(first, metadata=signed(app, first))
    reused = callback(fan, reservation_id, module_payment_id=first.module_payment_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await callbacks.ConfirmModulePayment(reused, metadata=signed(app, reused))
    details = error_details(err.value)
    assert (details.code, details.reason, details.bad_fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
        {"module_payment_id"},
    )


async def test_a_callback_delayed_past_the_fans_session_still_names_the_fan(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    """The session expired while the module retried: it still says who paid, and
    the hold, long lapsed, decides: REFUND."""
    fan, reservation_id = await held_seat(app, stubs)
    app.ctx.clock.advance(app.ctx.settings.session_ttl_seconds + 60)  # type: ignore[attr-defined]
    request = callback(fan, reservation_id)
    reply = await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))
    assert (reply.outcome, reply.refund_reason) == (REFUND, "RESERVATION_NOT_HELD")
    forged = callback(fan, reservation_id)
    forged.session_token = fan.session_token[:-4] + "AAAA"
    # A session that names no fan: REFUND at once (a retry could never pass),
    # recorded and answered the same to the retry, and seen by no fan.
    for _ in range(2):
        reply = await callbacks.ConfirmModulePayment(forged, metadata=signed(app, forged))
        assert (reply.outcome, reply.refund_reason) == (REFUND, "INVALID_CREDENTIALS")
    assert (await books(app, reservation_id))["refund_requests"] == 2
    async with app.ctx.pool.connection() as conn:
        payer = await scalar(
            conn,
            "SELECT user_id FROM module_refund_requests WHERE module_payment_id = %s",
            forged.module_payment_id,
        )
    assert payer is None


async def test_callbacks_racing_the_expiry_job_and_fans_taking_the_freed_seats(
    app: App,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    """At the hold's last instant the callbacks win; at its end the holds are
    gone whoever commits first: the expiry job, the callbacks and other fans
    taking the same seats all run at once, and no seat is sold twice or lost."""
    seats = 6
    ttl = app.ctx.settings.hold_ttl_seconds

    async def holds() -> tuple[str, list[tuple[AdmittedFan, str]]]:
        concert = await make_concert(app.ctx, seats=seats, price=PRICE)
        date_id = concert.dates[0].date_id
        held = []
        for seat in range(1, seats + 1):
            fan = await admitted_fan(stubs)
            reply = await stubs.reservation.ReserveSeat(
                reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=seat),
                metadata=bearer(fan.token),
            )
            held.append((fan, reply.reservation.reservation_id))
        return date_id, held

    async def report(fan: AdmittedFan, reservation_id: str) -> tuple[int, str]:
        request = callback(fan, reservation_id)
        reply = await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))
        return reply.outcome, reply.refund_reason

    # The last instant of the holds: every callback sells, the job frees nothing.
    _, in_time = await holds()
    app.ctx.clock.advance(ttl - 1)  # type: ignore[attr-defined]
    expiry, *answers = await asyncio.gather(
        app.ctx.jobs.run_now("hold-expiry"),
        *(report(fan, reservation) for fan, reservation in in_time),
    )
    assert answers == [(PAID, "")] * seats
    assert expiry.result == 0

    # The holds' end: the job, the callbacks and new fans racing for the seats.
    date_id, lapsing = await holds()
    takers = [await admitted_fan(stubs) for _ in range(seats)]
    app.ctx.clock.advance(ttl)  # type: ignore[attr-defined]

    async def take(fan: AdmittedFan, seat: int) -> bool:
        try:
            await stubs.reservation.ReserveSeat(
                reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=seat),
                metadata=bearer(fan.token),
            )
            return True
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err
            return False

    results = await asyncio.gather(
        app.ctx.jobs.run_now("hold-expiry"),
        *(report(fan, reservation) for fan, reservation in lapsing),
        *(take(fan, seat) for seat, fan in enumerate(takers, start=1)),
    )
    late_answers, taken = results[1 : 1 + seats], results[1 + seats :]
    assert late_answers == [(REFUND, "RESERVATION_NOT_HELD")] * seats
    assert taken == [True] * seats  # every freed seat went to a new fan, once
    async with app.ctx.pool.connection() as conn:
        for _, reservation_id in lapsing:
            assert (await books(app, reservation_id))["payments"] == 0
        live_holds = await scalar(
            conn,
            "SELECT count(*) FROM seats WHERE date_id = %s AND NOT sold AND held_until > %s",
            uuid.UUID(date_id),
            app.ctx.clock.now(),
        )
    assert live_holds == seats
    await assert_invariants(app)
