"""Use cases of payments, following the spec's payment diagram.

With the default payment module, the wallet in this database, Pay is one
transaction: server/booking/wallet_payment.py. With any other PaymentGateway
(one outside the database, or the fault-injecting ones of the tests) Pay runs
in three steps, each its own transaction, because the money moves in
the payment module (a PaymentGateway), outside the server's transaction:

1. begin: the reservation is still held by this fan; a payment attempt row is
   committed BEFORE any money moves (its id is the gateway's idempotency key).
   A second Pay of the same reservation stops here (one attempt at a time).
2. charge: the gateway takes the money, or declines (INSUFFICIENT_BALANCE,
   nothing changed).
3. confirm: ONE transaction checks the token is live and the reservation is
   still held by this fan and not expired, records the payment (unique per
   reservation), marks the seat sold, stores the answer (AIP-155) and, last,
   counts the sale and completes the token (the rows every payment shares). If any check
   fails the transaction rolls back and the gateway refunds in full; the fan
   is told RESERVATION_NOT_HELD.

If the process dies between 2 and 3, the attempt row stays 'charging'; the
reconciliation job finds it and confirms it (the reservation is still valid)
or refunds it. An attempt's state only moves by conditional updates under its
row lock, so the job and a slow Pay never both settle one charge.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from concert.v1 import payment_pb2
from server.booking.gateway import ChargeOutcome, ChargeState
from server.booking.holds import hold_state, reservation_not_found
from server.booking.payment_records import (
    PAYMENT_COLUMNS,
    count_sale,
    pay_record,
    payment_message,
    reservation_not_held,
)
from server.booking.runtime import BookingRuntime
from server.booking.wallet_payment import pay_from_wallet
from server.clock import Clock
from server.context import ServiceContext
from server.db.unit_of_work import Lock, LockKind, UnitOfWork, stored_answer, unit_of_work, unit_on
from server.errors import (
    Aborted,
    ErrorReason,
    FailedPrecondition,
    Unavailable,
    Violations,
)
from server.fan import Fan
from server.queue import store
from server.queue.completion import require_live_token
from server.validation import parse_request_id, parse_uuid

log = logging.getLogger(__name__)

# An attempt untouched for this long is no longer in flight: its Pay call died
# or gave up. Far above any call's database timeouts.
RECONCILE_AFTER = timedelta(seconds=60)
RECONCILE_BATCH = 100


@dataclass(frozen=True)
class Attempt:
    id: uuid.UUID
    reservation_id: uuid.UUID
    user_id: uuid.UUID
    token_id: uuid.UUID
    amount: int
    request_id: uuid.UUID | None


class NotConfirmable(Exception):
    """The reservation can no longer be paid for: the money goes back."""


async def pay(
    ctx: ServiceContext, booking: BookingRuntime, fan: Fan, request: payment_pb2.PayRequest
) -> payment_pb2.PayResponse:
    violations = Violations()
    reservation_id = parse_uuid(violations, "reservation_id", request.reservation_id)
    request_id = parse_request_id(violations, request.request_id)
    violations.raise_if_any()
    assert reservation_id is not None
    if booking.gateway.in_this_database:
        # The money is in this database: the debit joins the sale's transaction.
        return await pay_from_wallet(ctx, booking, fan, reservation_id, request_id, request)

    # 1. begin. The first answer to this request id is looked up before any
    # money moves (AIP-155): a retry never charges, and a reused id is refused
    # before it charges; the confirmation stores the answer.
    record = pay_record(fan.user_id, request_id, request)
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        replay = await stored_answer(unit.conn, record)
        if replay is not None:
            return replay
        attempt = await _begin_attempt(unit, ctx.clock, fan, reservation_id, request_id)

    # 2. charge
    try:
        outcome = await booking.gateway.charge(attempt.id, attempt.user_id, attempt.amount)
    except Exception:
        log.warning("payment gateway failed to charge attempt %s", attempt.id, exc_info=True)
        await settle_by_refund(ctx, booking, attempt)
        raise Unavailable(
            ErrorReason.ERROR_REASON_PAYMENT_GATEWAY_UNAVAILABLE,
            "the payment module failed; any money taken is returned",
            retry_after_seconds=1.0,
        ) from None
    if outcome is ChargeOutcome.DECLINED:
        async with ctx.pool.connection() as conn:
            await _move_attempt(conn, attempt.id, "charging", "declined", ctx.clock.now())
        raise FailedPrecondition(
            ErrorReason.ERROR_REASON_INSUFFICIENT_BALANCE,
            "the wallet holds less than the price",
            metadata={"price": str(attempt.amount)},
        )

    # 3. confirm, or give the money back
    try:
        async with unit_of_work(ctx.pool, ctx.clock) as unit:
            return await _confirm_once(ctx, unit, attempt, request, fan=fan)
    except Exception as failure:
        await settle_by_refund(ctx, booking, attempt)
        if isinstance(failure, NotConfirmable):
            raise reservation_not_held(str(failure)) from None
        raise


async def _begin_attempt(
    unit: UnitOfWork,
    clock: Clock,
    fan: Fan,
    reservation_id: uuid.UUID,
    request_id: uuid.UUID | None,
) -> Attempt:
    # Lock order (docs/concurrency.md): the token, then the reservation, as the
    # confirmation does; taking them the other way round deadlocked a begin
    # against a concurrent Pay's confirmation.
    await require_live_token(unit, fan, clock.now())
    # The reservation's row lock: concurrent Pays of it take turns here, and
    # the second finds the first's attempt.
    cursor = await unit.execute(
        "SELECT state, expires_at, price FROM reservations"
        " WHERE id = %s AND user_id = %s FOR UPDATE",
        (reservation_id, fan.user_id),
        locks=[Lock.of(LockKind.RESERVATION, reservation_id)],
    )
    row = await cursor.fetchone()
    if row is None:
        raise reservation_not_found()
    state, expires_at, price = row
    # The time after the lock: a hold that ran out while this waited for it
    # is not charged for.
    now = clock.now()
    if (state := hold_state(state, expires_at, now)) != "held":
        raise reservation_not_held(f"it is {state}")
    cursor = await unit.execute(
        "SELECT state FROM payment_attempts"
        " WHERE reservation_id = %s AND state IN ('charging', 'confirmed')",
        (reservation_id,),
    )
    if (live := await cursor.fetchone()) is not None:
        if live[0] == "confirmed":
            raise reservation_not_held("it is paid")
        raise Aborted(
            ErrorReason.ERROR_REASON_PAYMENT_IN_PROGRESS,
            "another payment of this reservation is under way",
            retry_after_seconds=1.0,
        )
    attempt = Attempt(uuid.uuid4(), reservation_id, fan.user_id, fan.token_id, price, request_id)
    await unit.execute(
        "INSERT INTO payment_attempts (id, reservation_id, user_id, token_id, amount, request_id,"
        " state, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'charging', %s, %s)",
        (
            attempt.id,
            reservation_id,
            fan.user_id,
            fan.token_id,
            price,
            request_id,
            now,
            now,
        ),
    )
    return attempt


async def _confirm_once(
    ctx: ServiceContext,
    unit: UnitOfWork,
    attempt: Attempt,
    request: payment_pb2.PayRequest,
    *,
    fan: Fan | None,
) -> payment_pb2.PayResponse:
    """The confirmation's statements (the caller's unit of work), answer stored once."""
    record = pay_record(attempt.user_id, attempt.request_id, request)
    if (replay := await unit.replay(record)) is not None:
        return replay
    response, sold_now = await confirm_attempt(unit, attempt, ctx.clock, fan=fan)
    remember = unit.remember_statement(record, response)
    # Last, in the message with the COMMIT: the answer and the counters every
    # payment shares (payment_records.count_sale), unless the sale was counted
    # by whoever confirmed it first.
    count = count_sale(uuid.UUID(response.payment.payment_id), attempt.token_id, ctx.clock.now())
    await unit.send(*([remember] if remember else []), *([count] if sold_now else []), commit=True)
    return response


async def confirm_attempt(
    unit: UnitOfWork,
    attempt: Attempt,
    clock: Clock,
    *,
    fan: Fan | None,
) -> tuple[payment_pb2.PayResponse, bool]:
    """Record the payment (the caller opened the transaction). Raises NotConfirmable.

    fan is the caller when Pay confirms (its token must still be live); None
    when the reconciliation job confirms a charge whose call died. Also says
    whether this call sold the seat: the caller then counts the sale
    (payment_records.count_sale) last, with the COMMIT. The hold is judged
    with the clock read after the reservation's lock (issue 13).
    """
    cursor = await unit.execute(
        "SELECT state FROM payment_attempts WHERE id = %s FOR UPDATE",
        (attempt.id,),
        locks=[Lock.of(LockKind.PAYMENT_ATTEMPT, attempt.id)],
    )
    row = await cursor.fetchone()
    assert row is not None
    if row[0] == "confirmed":  # the reconciliation job got there first, and counted it
        payment = await _payment_of(unit.conn, attempt.reservation_id)
        return payment_pb2.PayResponse(payment=payment), False
    if row[0] != "charging":
        raise NotConfirmable("the charge was already refunded")
    if fan is not None:
        await require_live_token(unit, fan, clock.now())
    else:
        # The job confirms whatever the token's state: it still locks the token
        # before the reservation, as every payment does (the sale ends the
        # token; taken after the reservation, it could deadlock with a Pay).
        await store.get_token(unit, attempt.token_id, for_update=True)
    cursor = await unit.execute(
        "SELECT state, expires_at, date_id, seat_number FROM reservations"
        " WHERE id = %s AND user_id = %s FOR UPDATE",
        (attempt.reservation_id, attempt.user_id),
        locks=[Lock.of(LockKind.RESERVATION, attempt.reservation_id)],
    )
    reservation = await cursor.fetchone()
    assert reservation is not None
    state, expires_at, date_id, seat_number = reservation
    # The time after the lock: a hold that ran out while this waited for it
    # (a cancellation or another Pay held it) is not sold.
    now = clock.now()
    if (state := hold_state(state, expires_at, now)) != "held":
        raise NotConfirmable("the hold expired" if state == "expired" else f"it is {state}")
    # One statement for the four rows of this sale (the seat, the payment, the
    # reservation, the attempt). Each part is conditional; if the seat or the
    # payment part did nothing, NotConfirmable rolls all of them back.
    cursor = await unit.execute(
        "WITH seat AS ("
        "  UPDATE seats SET sold = true, held_until = NULL"
        "  WHERE date_id = %(date)s AND seat_number = %(seat)s AND reservation_id = %(reservation)s"
        "   AND NOT sold AND held_until > %(now)s RETURNING 1"
        "), payment AS ("
        "  INSERT INTO payments"
        "   (id, reservation_id, user_id, amount, charge_key, state, created_at)"
        "  VALUES (%(payment)s, %(reservation)s, %(user)s, %(amount)s, %(attempt)s, 'completed',"
        "   %(now)s)"
        f"  ON CONFLICT (reservation_id) DO NOTHING RETURNING {PAYMENT_COLUMNS}"
        "), paid AS ("
        "  UPDATE reservations SET state = 'paid' WHERE id = %(reservation)s"
        "), confirmed AS ("
        "  UPDATE payment_attempts SET state = 'confirmed', updated_at = %(now)s"
        "  WHERE id = %(attempt)s AND state = 'charging'"
        ")"
        f" SELECT EXISTS (SELECT FROM seat), payment.* FROM (SELECT) AS one"
        " LEFT JOIN payment ON true",
        {
            "date": date_id,
            "seat": seat_number,
            "reservation": attempt.reservation_id,
            "now": now,
            "payment": uuid.uuid4(),
            "user": attempt.user_id,
            "amount": attempt.amount,
            "attempt": attempt.id,
        },
        locks=[Lock.of(LockKind.SEAT, f"{date_id}/{seat_number}")],
    )
    written = await cursor.fetchone()
    assert written is not None
    if written[1] is None:
        raise NotConfirmable("a payment for it already exists")
    if not written[0]:
        raise NotConfirmable("the seat is no longer held for it")
    return payment_pb2.PayResponse(payment=payment_message(written[1:])), True


async def _payment_of(conn: AsyncConnection, reservation_id: uuid.UUID) -> payment_pb2.Payment:
    cursor = await conn.execute(
        f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE reservation_id = %s", (reservation_id,)
    )
    row = await cursor.fetchone()
    assert row is not None
    return payment_message(row)


async def _move_attempt(
    conn: AsyncConnection, attempt_id: uuid.UUID, from_state: str, to_state: str, now: datetime
) -> bool:
    """One conditional UPDATE, in autocommit (a transaction of its own)."""
    cursor = await conn.execute(
        "UPDATE payment_attempts SET state = %s, updated_at = %s WHERE id = %s AND state = %s",
        (to_state, now, attempt_id, from_state),
    )
    return cursor.rowcount == 1


async def settle_by_refund(
    ctx: ServiceContext, booking: BookingRuntime, attempt: Attempt
) -> ChargeState | None:
    """Give back whatever the attempt took; None if the gateway must be asked again later.

    The attempt is claimed ('refunding') before the gateway is asked, so the
    reconciliation job cannot confirm a charge that is being refunded.
    """
    async with ctx.pool.connection() as conn:
        claimed = await _move_attempt(conn, attempt.id, "charging", "refunding", ctx.clock.now())
    if not claimed:
        return None
    return await _finish_refund(ctx, booking, attempt)


async def _finish_refund(
    ctx: ServiceContext, booking: BookingRuntime, attempt: Attempt
) -> ChargeState | None:
    try:
        result = await booking.gateway.refund(attempt.id, attempt.user_id)
    except Exception:
        log.warning(
            "refund of attempt %s failed; reconciliation retries", attempt.id, exc_info=True
        )
        return None
    async with ctx.pool.connection() as conn:
        await _move_attempt(conn, attempt.id, "refunding", "refunded", ctx.clock.now())
    return result


async def reconcile_payments(
    ctx: ServiceContext, booking: BookingRuntime, conn: AsyncConnection
) -> dict[str, int]:
    """The reconciliation job: settle attempts whose Pay call died or gave up.

    'charging': ask the gateway. Charged: confirm if the reservation is still
    valid, else refund. Never charged: void the key (refund), so a charge
    still on its way is refused. 'refunding': ask for the refund again.
    """
    now = ctx.clock.now()
    cursor = await conn.execute(
        "SELECT id, reservation_id, user_id, token_id, amount, request_id, state"
        " FROM payment_attempts WHERE state IN ('charging', 'refunding') AND updated_at <= %s"
        " ORDER BY updated_at LIMIT %s",
        (now - RECONCILE_AFTER, RECONCILE_BATCH),
    )
    counts = {"confirmed": 0, "refunded": 0, "pending": 0}
    for row in await cursor.fetchall():
        attempt = Attempt(*row[:6])
        settled: str | ChargeState | None
        if row[6] == "refunding":
            settled = await _finish_refund(ctx, booking, attempt)
        else:
            settled = await _reconcile_charging(ctx, booking, conn, attempt)
        if settled == "confirmed":
            counts["confirmed"] += 1
        elif settled is None:
            counts["pending"] += 1
        else:
            counts["refunded"] += 1
    return counts


async def _reconcile_charging(
    ctx: ServiceContext, booking: BookingRuntime, conn: AsyncConnection, attempt: Attempt
) -> str | ChargeState | None:
    try:
        found = await booking.gateway.lookup(attempt.id)
    except Exception:
        log.warning("gateway lookup of attempt %s failed", attempt.id, exc_info=True)
        return None
    if found is ChargeState.CHARGED:
        request = payment_pb2.PayRequest(
            reservation_id=str(attempt.reservation_id),
            request_id=str(attempt.request_id) if attempt.request_id else "",
        )
        try:
            async with unit_on(conn, ctx.clock) as unit:
                await _confirm_once(ctx, unit, attempt, request, fan=None)
            return "confirmed"
        except NotConfirmable:
            pass
    return await settle_by_refund(ctx, booking, attempt)
