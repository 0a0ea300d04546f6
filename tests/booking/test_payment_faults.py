"""Every branch of the spec's payment diagram, driven by a fault-injecting gateway.

The use cases are called directly (service layer) so a fault can land between
any two steps; the real WalletGateway does the money, and every test ends by
checking the books: balances == ledger, nothing created or lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from concert.v1 import payment_pb2, reservation_pb2
from concert.v1.error_reason_pb2 import ErrorReason
from server.app import App
from server.booking import holds, payments
from server.booking.gateway import (
    ChargeOutcome,
    ChargeState,
    GatewayUnavailable,
    WalletGateway,
)
from server.booking.install import RECONCILIATION_JOB
from server.errors import ServiceError
from server.fan import Fan
from tests.booking.helpers import make_concert, make_fan, money_totals, scalar

PRICE = 40_000


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point runs (not even except Exception)."""


@dataclass
class FaultyGateway:
    inner: WalletGateway
    # An outside payment module, as far as Pay can tell: paid in three steps.
    in_this_database = False
    fail_before_charge: bool = False
    lose_charge_answer: bool = False
    crash_after_charge: bool = False
    failing_refunds: int = 0
    after_charge: Callable[[], Awaitable[None]] | None = None
    calls: list[str] = field(default_factory=list)

    async def charge(self, key: uuid.UUID, user_id: uuid.UUID, amount: int) -> ChargeOutcome:
        self.calls.append("charge")
        if self.fail_before_charge:
            raise GatewayUnavailable("down")
        outcome = await self.inner.charge(key, user_id, amount)
        if self.after_charge is not None:
            await self.after_charge()
        if self.crash_after_charge:
            raise SimulatedCrash
        if self.lose_charge_answer:
            raise GatewayUnavailable("answer lost")
        return outcome

    async def refund(self, key: uuid.UUID, user_id: uuid.UUID) -> ChargeState:
        self.calls.append("refund")
        if self.failing_refunds > 0:
            self.failing_refunds -= 1
            raise GatewayUnavailable("down")
        return await self.inner.refund(key, user_id)

    async def lookup(self, key: uuid.UUID) -> ChargeState | None:
        return await self.inner.lookup(key)


@pytest.fixture
def gateway(app: App) -> FaultyGateway:
    faulty = FaultyGateway(WalletGateway(app.ctx.pool, app.ctx.clock))
    app.booking.gateway = faulty
    return faulty


async def held_reservation(app: App, balance: int = 100_000) -> tuple[Fan, str]:
    concert = await make_concert(app.ctx, seats=2, price=PRICE)
    fan = await make_fan(app.ctx, balance=balance)
    held = await holds.hold_seat(
        app.ctx,
        app.booking,
        fan,
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
    )
    return fan, held.reservation.reservation_id


async def pay(app: App, fan: Fan, reservation_id: str, request_id: str = "") -> object:
    return await payments.pay(
        app.ctx,
        app.booking,
        fan,
        payment_pb2.PayRequest(reservation_id=reservation_id, request_id=request_id),
    )


# state() of a reservation whose payment went through: the seat sold, once.
SOLD = {
    "reservation": "paid",
    "payments": 1,
    "sold": True,
    "attempts": "confirmed",
    "token": "completed",
}


async def state(app: App, reservation_id: str) -> dict[str, object]:
    async with app.ctx.pool.connection() as conn:
        rid = uuid.UUID(reservation_id)
        return {
            "reservation": await scalar(conn, "SELECT state FROM reservations WHERE id = %s", rid),
            "payments": await scalar(
                conn, "SELECT count(*) FROM payments WHERE reservation_id = %s", rid
            ),
            "sold": await scalar(
                conn,
                "SELECT sold FROM seats s JOIN reservations r ON r.id = %s"
                " AND s.date_id = r.date_id AND s.seat_number = r.seat_number",
                rid,
            ),
            "attempts": await scalar(
                conn,
                "SELECT coalesce(string_agg(state, ',' ORDER BY created_at), '')"
                " FROM payment_attempts WHERE reservation_id = %s",
                rid,
            ),
            "token": await scalar(
                conn,
                "SELECT t.state FROM queue_tokens t JOIN reservations r ON r.user_id = t.user_id"
                " WHERE r.id = %s",
                rid,
            ),
        }


async def assert_books_balance(app: App, balance: int) -> None:
    totals = await money_totals(app.ctx)
    assert totals["balances"] == totals["ledger"] == balance
    assert totals["charges"] - totals["debits"] + totals["refunds"] == balance
    assert totals["mismatched"] == 0


async def expect_error(call: Awaitable[object]) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await call
    return caught.value


async def test_payment_succeeds_sells_the_seat_and_completes_the_token(
    app: App, gateway: FaultyGateway
) -> None:
    fan, reservation_id = await held_reservation(app)
    paid = await pay(app, fan, reservation_id)
    assert paid.payment.amount == PRICE  # type: ignore[attr-defined]
    assert await state(app, reservation_id) == SOLD
    await assert_books_balance(app, 100_000 - PRICE)


async def test_payment_failed_insufficient_balance_changes_nothing(
    app: App, gateway: FaultyGateway
) -> None:
    fan, reservation_id = await held_reservation(app, balance=PRICE - 1)
    error = await expect_error(pay(app, fan, reservation_id))
    assert (error.code.name, error.reason) == (
        "FAILED_PRECONDITION",
        ErrorReason.ERROR_REASON_INSUFFICIENT_BALANCE,
    )
    after = await state(app, reservation_id)
    assert after["reservation"] == "held" and after["payments"] == 0 and after["sold"] is False
    assert after["token"] == "live"
    await assert_books_balance(app, PRICE - 1)
    async with app.ctx.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM wallet_ledger WHERE kind <> 'charge'") == 0


async def test_no_valid_reservation_after_the_charge_refunds_in_full(
    app: App, gateway: FaultyGateway
) -> None:
    """The late payment: the hold runs out while the payment module works."""
    fan, reservation_id = await held_reservation(app)

    async def hold_runs_out() -> None:
        app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]

    gateway.after_charge = hold_runs_out
    error = await expect_error(pay(app, fan, reservation_id))
    assert (error.code.name, error.reason) == (
        "FAILED_PRECONDITION",
        ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD,
    )
    after = await state(app, reservation_id)
    assert after["payments"] == 0 and after["sold"] is False
    assert after["attempts"] == "refunded"
    assert after["token"] == "live"
    async with app.ctx.pool.connection() as conn:
        assert (
            await scalar(conn, "SELECT sum(amount) FROM wallet_ledger WHERE kind = 'refund'")
            == PRICE
        )
    await assert_books_balance(app, 100_000)


async def test_payment_already_exists_refunds_in_full(app: App, gateway: FaultyGateway) -> None:
    """The unique constraint branch: another payment of the reservation slipped in."""
    fan, reservation_id = await held_reservation(app)

    async def another_payment_lands() -> None:
        async with app.ctx.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO payments (id, reservation_id, user_id, amount, charge_key, state,"
                " created_at) VALUES (%s, %s, %s, 0, %s, 'completed', %s)",
                (
                    uuid.uuid4(),
                    uuid.UUID(reservation_id),
                    fan.user_id,
                    uuid.uuid4(),
                    app.ctx.clock.now(),
                ),
            )

    gateway.after_charge = another_payment_lands
    error = await expect_error(pay(app, fan, reservation_id))
    assert (error.code.name, error.reason) == (
        "FAILED_PRECONDITION",
        ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD,
    )
    after = await state(app, reservation_id)
    assert after["payments"] == 1 and after["sold"] is False and after["attempts"] == "refunded"
    await assert_books_balance(app, 100_000)


async def test_gateway_down_before_charging_moves_no_money(
    app: App, gateway: FaultyGateway
) -> None:
    fan, reservation_id = await held_reservation(app)
    gateway.fail_before_charge = True
    error = await expect_error(pay(app, fan, reservation_id))
    assert (error.code.name, error.reason) == (
        "UNAVAILABLE",
        ErrorReason.ERROR_REASON_PAYMENT_GATEWAY_UNAVAILABLE,
    )
    assert (await state(app, reservation_id))["attempts"] == "refunded"  # the key was voided
    assert await gateway.inner.lookup(await _only_attempt(app)) is ChargeState.VOIDED
    await assert_books_balance(app, 100_000)

    gateway.fail_before_charge = False  # the fan retries once the module is back
    paid = await pay(app, fan, reservation_id)
    assert paid.payment.amount == PRICE  # type: ignore[attr-defined]
    await assert_books_balance(app, 100_000 - PRICE)


async def test_charge_answer_lost_refunds_at_once(app: App, gateway: FaultyGateway) -> None:
    fan, reservation_id = await held_reservation(app)
    gateway.lose_charge_answer = True
    error = await expect_error(pay(app, fan, reservation_id))
    assert error.reason == ErrorReason.ERROR_REASON_PAYMENT_GATEWAY_UNAVAILABLE
    after = await state(app, reservation_id)
    assert after["attempts"] == "refunded" and after["payments"] == 0
    await assert_books_balance(app, 100_000)


async def test_crash_between_charge_and_confirmation_is_completed_by_reconciliation(
    app: App, gateway: FaultyGateway
) -> None:
    fan, reservation_id = await held_reservation(app)
    gateway.crash_after_charge = True
    with pytest.raises(SimulatedCrash):
        await pay(app, fan, reservation_id, request_id=str(uuid.uuid4()))
    # The money is taken and nothing is confirmed: the attempt says so.
    assert (await state(app, reservation_id))["attempts"] == "charging"
    await assert_books_balance(app, 100_000 - PRICE)

    run = await app.ctx.jobs.run_now(RECONCILIATION_JOB)
    assert run.result == {"confirmed": 0, "refunded": 0, "pending": 0}  # still in flight

    app.ctx.clock.advance(61)  # type: ignore[attr-defined]  # within the 300 s hold
    run = await app.ctx.jobs.run_now(RECONCILIATION_JOB)
    assert run.result == {"confirmed": 1, "refunded": 0, "pending": 0}
    assert await state(app, reservation_id) == SOLD
    await assert_books_balance(app, 100_000 - PRICE)


async def test_crash_then_expired_hold_is_refunded_by_reconciliation(
    app: App, gateway: FaultyGateway
) -> None:
    fan, reservation_id = await held_reservation(app)
    gateway.crash_after_charge = True
    with pytest.raises(SimulatedCrash):
        await pay(app, fan, reservation_id)
    app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]
    run = await app.ctx.jobs.run_now(RECONCILIATION_JOB)
    assert run.result == {"confirmed": 0, "refunded": 1, "pending": 0}
    after = await state(app, reservation_id)
    assert after["payments"] == 0 and after["attempts"] == "refunded" and after["sold"] is False
    await assert_books_balance(app, 100_000)


async def test_failed_refund_is_retried_by_reconciliation(app: App, gateway: FaultyGateway) -> None:
    fan, reservation_id = await held_reservation(app)

    async def hold_runs_out() -> None:
        app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]

    gateway.after_charge = hold_runs_out
    gateway.failing_refunds = 2
    error = await expect_error(pay(app, fan, reservation_id))
    assert error.reason == ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    assert (await state(app, reservation_id))["attempts"] == "refunding"
    await assert_books_balance(app, 100_000 - PRICE)  # the money is out, and on record

    app.ctx.clock.advance(61)  # type: ignore[attr-defined]
    first = await app.ctx.jobs.run_now(RECONCILIATION_JOB)
    assert first.result == {"confirmed": 0, "refunded": 0, "pending": 1}
    second = await app.ctx.jobs.run_now(RECONCILIATION_JOB)
    assert second.result == {"confirmed": 0, "refunded": 1, "pending": 0}
    assert (await state(app, reservation_id))["attempts"] == "refunded"
    await assert_books_balance(app, 100_000)


async def test_pay_is_idempotent_by_request_id(app: App, gateway: FaultyGateway) -> None:
    fan, reservation_id = await held_reservation(app)
    request_id = str(uuid.uuid4())
    first = await pay(app, fan, reservation_id, request_id)
    again = await pay(app, fan, reservation_id, request_id)
    assert again == first
    assert gateway.calls == ["charge"]
    _, other_reservation = await held_reservation(app)
    error = await expect_error(pay(app, fan, other_reservation, request_id))
    assert (error.code.name, error.reason) == (
        "INVALID_ARGUMENT",
        ErrorReason.ERROR_REASON_REQUEST_ID_REUSED,
    )
    assert gateway.calls == ["charge"]


async def _only_attempt(app: App) -> uuid.UUID:
    async with app.ctx.pool.connection() as conn:
        value = await scalar(conn, "SELECT id FROM payment_attempts")
    assert isinstance(value, uuid.UUID)
    return value
