"""A hold that runs out while a use case waits for its locks (issue 13).

Each use case is started while another connection holds a lock it needs; the
hold lapses during the wait; the lock is released and nobody else touches the
seat. The use case must decide with the time after its locks, never with the
time it read before them.

One-round-trip use cases (Pay from the wallet, ReserveSeat) send their
statements before the wait, so their SQL adds the real time the transaction has
spent to the clock's `now`: their tests freeze the FakeClock a short real
margin before the expiry and hold the lock past it. The others read the clock
again after their locks: their tests move the FakeClock during the wait.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from concert.v1 import (
    payment_callback_pb2,
    payment_callback_pb2_grpc,
    payment_pb2,
    reservation_pb2,
)
from concert.v1.error_reason_pb2 import ErrorReason
from server.app import App
from server.booking import holds, payments
from server.clock import FakeClock
from server.db.unit_of_work import Lock, LockKind
from server.errors import FailedPrecondition, ServiceError
from server.fan import Fan
from tests.booking.helpers import make_concert, make_fan, money_totals, scalar
from tests.booking.test_module_payments import REFUND, books, callback, signed
from tests.booking.test_module_payments import callbacks as callbacks  # the module's fixtures:
from tests.booking.test_module_payments import held_seat as module_held_seat
from tests.booking.test_module_payments import settings as settings  # a secrets file, a stub
from tests.booking.test_payment_faults import FaultyGateway
from tests.booking.test_payment_faults import gateway as gateway
from tests.booking.test_payment_faults import state as payment_state
from tests.queue.test_issue import wait_for_lock_wait
from tests.reliability.helpers import assert_invariants
from tests.support import Stubs

PRICE = 30_000
T = TypeVar("T")
# The real time left on a hold when a one-round-trip use case starts, and how
# long the lock is then held: past the margin, well within lock_timeout.
MARGIN = timedelta(seconds=0.5)
WAIT_SECONDS = 1.0


async def hold(app: App, fan: Fan, date_id: str) -> reservation_pb2.Reservation:
    held = await holds.hold_seat(
        app.ctx,
        app.booking,
        fan,
        reservation_pb2.ReserveSeatRequest(date_id=date_id, seat_number=1),
    )
    return held.reservation


async def held_seat(app: App, balance: int = PRICE) -> tuple[Fan, reservation_pb2.Reservation]:
    concert = await make_concert(app.ctx, seats=2, price=PRICE)
    fan = await make_fan(app.ctx, balance=balance)
    return fan, await hold(app, fan, concert.dates[0].date_id)


def just_before_expiry(clock: FakeClock, reservation: reservation_pb2.Reservation) -> None:
    """The clock stops MARGIN before the hold's expiry: only real time can end it."""
    clock.set(reservation.expire_time.ToDatetime().replace(tzinfo=clock.now().tzinfo) - MARGIN)


async def seat_row(app: App, reservation: reservation_pb2.Reservation) -> tuple[Any, ...]:
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT sold, reservation_id FROM seats WHERE date_id = %s AND seat_number = %s",
            (reservation.date_id, reservation.seat_number),
        )
        row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


async def wallet_rows(app: App, fan: Fan) -> dict[str, object]:
    async with app.ctx.pool.connection() as conn:
        return {
            name: await scalar(conn, query, fan.user_id)
            for name, query in {
                "balance": "SELECT balance FROM wallets WHERE user_id = %s",
                "attempts": "SELECT count(*) FROM payment_attempts WHERE user_id = %s",
                "charges": "SELECT count(*) FROM gateway_charges WHERE user_id = %s",
                "payments": "SELECT count(*) FROM payments WHERE user_id = %s",
                "reservation": "SELECT state FROM reservations WHERE user_id = %s",
                "token": "SELECT state FROM queue_tokens WHERE user_id = %s",
            }.items()
        }


async def refused_reason(call: Awaitable[object]) -> object:
    with pytest.raises(ServiceError) as refused:
        await call
    assert isinstance(refused.value, FailedPrecondition)
    return refused.value.reason


async def while_locked(
    database_url: str,
    reservation_id: str,
    call: Awaitable[T],
    lapse: Callable[[], Awaitable[None]],
) -> T:
    """`call`, started while another transaction holds the reservation's row lock;
    once it waits for that lock, `lapse` lets the hold run out, then the lock is
    released and the call's answer (or error) comes back."""
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        await blocker.execute(
            "SELECT 1 FROM reservations WHERE id = %s FOR UPDATE", (reservation_id,)
        )
        waiting = asyncio.ensure_future(call)
        await wait_for_lock_wait(blocker)
        await lapse()
        await blocker.rollback()
        return await waiting


def past_the_hold(app: App, clock: FakeClock) -> Callable[[], Awaitable[None]]:
    """A lapse on the FakeClock: the hold's whole lifetime passes, no real wait."""

    async def advance() -> None:
        clock.advance(app.ctx.settings.hold_ttl_seconds + 1)

    return advance


async def past_the_margin() -> None:
    """A lapse in real time, for a use case that judges the hold in SQL at the
    clock's time plus the real wait (the FakeClock stays where it is)."""
    await asyncio.sleep(WAIT_SECONDS)


@pytest.mark.parametrize("with_request_id", [False, True])
async def test_pay_from_the_wallet_refuses_a_hold_that_lapsed_while_it_waited(
    app: App, clock: FakeClock, database_url: str, with_request_id: bool
) -> None:
    """One round trip: the sale decides with the clock's time plus the real wait.
    The hold is only lapsed by that reckoning (the FakeClock never moves), so the
    refusal's explanation must use it too: RESERVATION_NOT_HELD, not INTERNAL."""
    fan, reservation = await held_seat(app)
    just_before_expiry(clock, reservation)
    request = payment_pb2.PayRequest(
        reservation_id=reservation.reservation_id,
        request_id=str(uuid.uuid4()) if with_request_id else "",
    )
    paying = payments.pay(app.ctx, app.booking, fan, request)
    reason = await refused_reason(
        while_locked(database_url, reservation.reservation_id, paying, past_the_margin)
    )

    assert reason == ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    assert await wallet_rows(app, fan) == {
        "balance": PRICE,
        "attempts": 0,
        "charges": 0,
        "payments": 0,
        "reservation": "held",  # lapsed; the expiry job writes it down later
        "token": "live",
    }
    assert await seat_row(app, reservation) == (False, uuid.UUID(reservation.reservation_id))
    await assert_invariants(app)


async def test_three_step_pay_charges_nothing_for_a_hold_that_lapsed_while_it_began(
    app: App, clock: FakeClock, database_url: str, gateway: FaultyGateway
) -> None:
    """The begin step reads the time after the reservation's lock: no attempt, no
    charge (it used to charge, then refund at the confirmation)."""
    fan, reservation = await held_seat(app, balance=100_000)
    request = payment_pb2.PayRequest(reservation_id=reservation.reservation_id)
    paying = payments.pay(app.ctx, app.booking, fan, request)
    reason = await refused_reason(
        while_locked(database_url, reservation.reservation_id, paying, past_the_hold(app, clock))
    )

    assert reason == ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    assert gateway.calls == []
    assert await payment_state(app, reservation.reservation_id) == {
        "reservation": "held",
        "payments": 0,
        "sold": False,
        "attempts": "",
        "token": "live",
    }
    assert (await money_totals(app.ctx))["balances"] == 100_000
    await assert_invariants(app)


async def test_three_step_pay_refunds_a_hold_that_lapsed_while_it_confirmed(
    app: App, clock: FakeClock, database_url: str, gateway: FaultyGateway
) -> None:
    """The confirmation reads the time after the reservation's lock: the charge is
    refunded in full and nothing is sold (it used to sell the lapsed hold)."""
    fan, reservation = await held_seat(app, balance=100_000)
    released: list[asyncio.Task[None]] = []
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:

        async def lapse_then_release() -> None:
            await wait_for_lock_wait(blocker)
            clock.advance(app.ctx.settings.hold_ttl_seconds + 1)
            await blocker.rollback()

        async def lock_the_reservation() -> None:  # after the charge, before the confirmation
            await blocker.execute(
                "SELECT 1 FROM reservations WHERE id = %s FOR UPDATE",
                (reservation.reservation_id,),
            )
            released.append(asyncio.create_task(lapse_then_release()))

        gateway.after_charge = lock_the_reservation
        reason = await refused_reason(
            payments.pay(
                app.ctx,
                app.booking,
                fan,
                payment_pb2.PayRequest(reservation_id=reservation.reservation_id),
            )
        )
        await asyncio.gather(*released)

    assert reason == ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    assert gateway.calls == ["charge", "refund"]
    assert await payment_state(app, reservation.reservation_id) == {
        "reservation": "held",
        "payments": 0,
        "sold": False,
        "attempts": "refunded",
        "token": "live",
    }
    totals = await money_totals(app.ctx)
    assert totals["balances"] == totals["ledger"] == 100_000
    await assert_invariants(app)


async def test_reserve_seat_takes_a_seat_whose_hold_lapsed_while_it_waited(
    app: App, clock: FakeClock, database_url: str
) -> None:
    """One round trip: the hold decides with the clock's time plus the real wait
    (here for the fan's hold-cap lock), so a seat whose hold ran out meanwhile is
    free (it used to answer SEAT_UNAVAILABLE)."""
    _first, reservation = await held_seat(app)
    second = await make_fan(app.ctx)
    just_before_expiry(clock, reservation)
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        # What another ReserveSeat of the second fan would hold.
        await blocker.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            Lock.of(LockKind.HOLD_CAP, second.user_id).advisory_key(),
        )
        started = time.monotonic()
        holding = asyncio.ensure_future(hold(app, second, reservation.date_id))
        await wait_for_lock_wait(blocker)
        await asyncio.sleep(WAIT_SECONDS)  # the first fan's hold runs out meanwhile
        await blocker.rollback()
        taken = await holding
        waited = time.monotonic() - started

    assert taken.state == reservation_pb2.RESERVATION_STATE_HELD
    assert taken.user_id == str(second.user_id) and taken.seat_number == reservation.seat_number
    assert await seat_row(app, reservation) == (False, uuid.UUID(taken.reservation_id))
    # The frozen clock catches up with the real time the hold was judged at:
    # by it, too, the first hold has lapsed and the seat is claimed once.
    clock.advance(waited)
    await assert_invariants(app)


async def test_cancel_of_a_hold_that_lapsed_while_it_waited_is_not_held(
    app: App, clock: FakeClock, database_url: str
) -> None:
    """CancelReservation reads the time after the reservation's lock: the lapsed
    hold is expired, not cancelled (it used to answer CANCELLED)."""
    fan, reservation = await held_seat(app)
    request = reservation_pb2.CancelReservationRequest(reservation_id=reservation.reservation_id)
    cancelling = holds.cancel_reservation(app.ctx, app.booking, fan, request)
    with pytest.raises(FailedPrecondition) as refused:
        await while_locked(
            database_url, reservation.reservation_id, cancelling, past_the_hold(app, clock)
        )

    assert refused.value.reason == ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    assert refused.value.metadata == {"state": "expired"}
    assert (await wallet_rows(app, fan))["reservation"] == "held"  # lapsed, never cancelled
    assert await seat_row(app, reservation) == (False, uuid.UUID(reservation.reservation_id))
    await assert_invariants(app)


async def test_a_module_payment_of_a_hold_that_lapsed_while_it_waited_is_refunded(
    app: App,
    clock: FakeClock,
    database_url: str,
    stubs: Stubs,
    callbacks: payment_callback_pb2_grpc.PaymentCallbackServiceStub,
) -> None:
    """The callback reads the time after the reservation's lock: REFUND,
    RESERVATION_NOT_HELD, nothing sold (it used to sell the lapsed hold)."""
    fan, reservation_id = await module_held_seat(app, stubs)
    request = callback(fan, reservation_id)

    async def reporting() -> payment_callback_pb2.ConfirmModulePaymentResponse:
        # A coroutine: the call starts once the lock is held (a gRPC call starts when made).
        return await callbacks.ConfirmModulePayment(request, metadata=signed(app, request))

    reply = await while_locked(database_url, reservation_id, reporting(), past_the_hold(app, clock))

    assert (reply.outcome, reply.refund_reason) == (REFUND, "RESERVATION_NOT_HELD")
    assert await books(app, reservation_id) == {
        "payments": 0,
        "refund_requests": 1,
        "reservation": "held",  # lapsed; the expiry job writes it down later
        "sold": 0,
        "sold_count": 0,
    }
    await assert_invariants(app)
