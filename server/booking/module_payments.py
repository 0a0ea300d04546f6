"""A payment module's callback: record the payment it took, or tell it to refund.

The spec's payment diagram with a module outside the server: the fan paid at
the module; the module reports it here (PaymentCallbackService) and retries
until it gets an answer. In one unit of work this:

1. records the call as an AIP-155 request keyed by the module's payment id,
   so the module's retry (or a duplicate sent at once) gets the first answer;
2. locks the fan's live queue token (if any), then the reservation;
3. checks the reservation is the fan's, still held, and priced at the amount
   taken; if not, records a refund request and answers REFUND (the module
   gives the money back and stops retrying);
4. sells the seat (only if still held by this reservation), records the
   payment with the module's ids (at most one per reservation, one per module
   payment id), marks the reservation paid; then, with the COMMIT, ends the
   fan's token and counts the sale (payment_records.count_sale).

The fan's token may have lapsed while the fan paid at the module: the hold is
what the payment buys, so the sale is recorded all the same, and only a live
token is ended.
"""

from __future__ import annotations

import uuid
from typing import Any

from concert.v1 import payment_callback_pb2
from server.accounts.authentication import PROOF_MAX_AGE
from server.accounts.sessions import verify_session
from server.booking.holds import hold_state
from server.booking.payment_records import PAYMENT_COLUMNS, count_sale, payment_message
from server.booking.runtime import BookingRuntime
from server.context import ServiceContext
from server.db.unit_of_work import (
    Lock,
    LockKind,
    RequestRecord,
    Statement,
    UnitOfWork,
    unit_of_work,
)
from server.errors import ErrorReason, Violations, wire_reason
from server.queue.store import TOKEN_COLUMNS, token_row
from server.validation import parse_uuid

PAID = payment_callback_pb2.MODULE_PAYMENT_OUTCOME_PAID
REFUND = payment_callback_pb2.MODULE_PAYMENT_OUTCOME_REFUND
MAX_MODULE_PAYMENT_ID = 128
# Module payment ids become AIP-155 request ids (UUIDs) in this namespace.
_REQUEST_IDS = uuid.UUID("6c1f3a52-2d55-4b8e-9d0e-7f1d8a3c9b40")

_LOCK_FANS_TOKEN = (
    f"SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE user_id = %s AND state = 'live' FOR UPDATE"
)
_LOCK_RESERVATION = (
    "SELECT user_id, state, expires_at, price, date_id, seat_number FROM reservations"
    " WHERE id = %s FOR UPDATE"
)
# The sale: the seat only if still held by this reservation; the payment and
# the reservation's state only if the seat was sold.
_SELL = f"""
    WITH seat AS (
        UPDATE seats SET sold = true, held_until = NULL
         WHERE date_id = %(date)s AND seat_number = %(seat)s
           AND reservation_id = %(reservation)s AND NOT sold AND held_until > %(now)s
        RETURNING 1
    ), payment AS (
        INSERT INTO payments (id, reservation_id, user_id, amount, charge_key, state, created_at,
                              module_id, module_payment_id)
        SELECT %(payment)s, %(reservation)s, %(user)s, %(amount)s, %(payment)s, 'completed',
               %(now)s, %(module)s, %(module_payment)s
          FROM seat
        RETURNING {PAYMENT_COLUMNS}
    ), paid AS (
        UPDATE reservations SET state = 'paid'
         WHERE id = %(reservation)s AND EXISTS (SELECT FROM seat)
    )
    SELECT * FROM payment
"""
_REFUND_REQUEST = (
    "INSERT INTO module_refund_requests"
    " (module_id, module_payment_id, reservation_id, amount, reason, created_at, user_id,"
    "  payment_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


async def confirm_module_payment(
    ctx: ServiceContext,
    booking: BookingRuntime,
    module_id: str,
    request: payment_callback_pb2.ConfirmModulePaymentRequest,
) -> payment_callback_pb2.ConfirmModulePaymentResponse:
    violations = Violations()
    if not 1 <= len(request.module_payment_id) <= MAX_MODULE_PAYMENT_ID:
        violations.add("module_payment_id", f"1 to {MAX_MODULE_PAYMENT_ID} characters")
    reservation_id = parse_uuid(violations, "reservation_id", request.reservation_id)
    if request.amount < 0:
        violations.add("amount", "must be 0 or more")
    if not request.session_token or len(request.session_token) > 2048:
        violations.add("session_token", "required, at most 2048 characters")
    violations.raise_if_any()
    assert reservation_id is not None
    user_id = _payer(ctx, request.session_token)
    record = RequestRecord(
        f"PaymentCallbackService.ConfirmModulePayment:{module_id}",
        uuid.uuid5(_REQUEST_IDS, request.module_payment_id),
        request,
        payment_callback_pb2.ConfirmModulePaymentResponse,
        id_field="module_payment_id",
    )
    token = None
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        key = unit.record_statement(record)
        assert key is not None
        inserted, tokens = await unit.send(
            key, Statement(_LOCK_FANS_TOKEN, (user_id,), (Lock.of(LockKind.QUEUE_TOKEN),))
        )
        if (replay := await unit.replayed(record, inserted)) is not None:
            return replay
        if user_id is None:  # no fan to sell to; retrying would not change it
            return await _ask_for_refund(
                unit,
                record,
                module_id,
                reservation_id,
                None,
                ErrorReason.ERROR_REASON_INVALID_CREDENTIALS,
            )
        token = token_row(tokens)
        # The token found is the one locked: say so, so that ending it with the
        # sale is known to take nothing new.
        held_token = [Lock.of(LockKind.QUEUE_TOKEN, token.token_id)] if token else []
        [reservations] = await unit.send(
            Statement(
                _LOCK_RESERVATION,
                (reservation_id,),
                (*held_token, Lock.of(LockKind.RESERVATION, reservation_id)),
            )
        )
        # The time after the lock: a hold that ran out while this waited for
        # it (a Pay or a cancellation of it held it) is refunded, not sold.
        now = ctx.clock.now()
        refusal = _refusal(reservations, user_id, request.amount, now)
        sold: list[Any] = []
        if refusal is None:
            user, _state, _expires, _price, date_id, seat_number = reservations[0]
            payment_id = uuid.uuid4()
            [sold] = await unit.send(
                Statement(
                    _SELL,
                    {
                        "date": date_id,
                        "seat": seat_number,
                        "reservation": reservation_id,
                        "now": now,
                        "payment": payment_id,
                        "user": user,
                        "amount": request.amount,
                        "module": module_id,
                        "module_payment": request.module_payment_id,
                    },
                    (Lock.of(LockKind.SEAT, f"{date_id}/{seat_number}"),),
                )
            )
            if not sold:  # the hold ran out and another fan took the seat meanwhile
                refusal = ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
        if refusal is not None:
            return await _ask_for_refund(unit, record, module_id, reservation_id, user_id, refusal)
        response = payment_callback_pb2.ConfirmModulePaymentResponse(
            outcome=PAID, payment=payment_message(sold[0])
        )
        remember = unit.remember_statement(record, response)
        assert remember is not None
        token_id = token.token_id if token is not None else None
        await unit.send(remember, count_sale(payment_id, token_id, now), commit=True)
    if token is not None:  # committed: this process refuses the token from now
        booking.token_completed(token.token_id, token.expires_at)
    return response


def _payer(ctx: ServiceContext, session_token: str) -> uuid.UUID | None:
    """The fan a callback names. The session may have expired since the fan paid
    (a callback delayed or retried for a while): it still says who paid, up to
    PROOF_MAX_AGE, since the module, not the fan, is the caller here; the hold
    decides whether the payment is kept. None: the credential names no fan
    (forged, or expired too long ago)."""
    session = verify_session(ctx.signer, session_token, ctx.clock.now(), expired_for=PROOF_MAX_AGE)
    if session is None:
        return None
    return session.user_id


def _refusal(
    reservations: list[Any], user_id: uuid.UUID, amount: int, now: Any
) -> ErrorReason | None:
    """Why the module must refund, from the locked reservation; None if it may be sold."""
    if not reservations or reservations[0][0] != user_id:
        return ErrorReason.ERROR_REASON_RESERVATION_NOT_FOUND
    _user, state, expires_at, price, _date, _seat = reservations[0]
    if hold_state(state, expires_at, now) != "held":
        return ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD
    if price != amount:
        return ErrorReason.ERROR_REASON_AMOUNT_MISMATCH
    return None


async def _ask_for_refund(
    unit: UnitOfWork,
    record: RequestRecord[payment_callback_pb2.ConfirmModulePaymentResponse],
    module_id: str,
    reservation_id: uuid.UUID,
    user_id: uuid.UUID | None,
    reason: ErrorReason,
) -> payment_callback_pb2.ConfirmModulePaymentResponse:
    """Record the refund request with the answer, so a retry gets the same one;
    the fan who paid reads it as a refunded payment (payment_views)."""
    request = record.request
    assert isinstance(request, payment_callback_pb2.ConfirmModulePaymentRequest)
    assert unit.clock is not None
    response = payment_callback_pb2.ConfirmModulePaymentResponse(
        outcome=REFUND, refund_reason=wire_reason(reason)
    )
    remember = unit.remember_statement(record, response)
    assert remember is not None
    await unit.send(
        Statement(
            _REFUND_REQUEST,
            (
                module_id,
                request.module_payment_id,
                reservation_id,
                request.amount,
                wire_reason(reason),
                unit.clock.now(),
                user_id,
                uuid.uuid4(),
            ),
        ),
        remember,
        commit=True,
    )
    return response
