"""Use cases of reservations: hold a seat, show it, cancel it, expire holds.

The race for a seat is decided by ONE conditional UPDATE of the seat row (see
docs/concurrency.md): it takes the row lock, and a racer that waited for it
re-checks the WHERE clause against the winner's committed row, finds the seat
held, and updates nothing. Exactly one racer gets a row back.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from concert.v1 import reservation_pb2
from server.booking.concerts import timestamp
from server.booking.runtime import BookingRuntime
from server.clock import Clock
from server.context import ServiceContext
from server.db.unit_of_work import (
    UNANSWERED_GUARD,
    Lock,
    LockKind,
    RequestRecord,
    Statement,
    UnitOfWork,
    unit_of_work,
    unit_on,
)
from server.errors import AlreadyExists, ErrorReason, FailedPrecondition, NotFound, Violations
from server.fan import Fan
from server.queue.completion import LIVE_TOKEN_GUARD, insist_live, live_token_params
from server.queue.store import lock_token_then, token_row
from server.validation import parse_request_id, parse_uuid

_STATES = {
    "held": reservation_pb2.RESERVATION_STATE_HELD,
    "paid": reservation_pb2.RESERVATION_STATE_PAID,
    "cancelled": reservation_pb2.RESERVATION_STATE_CANCELLED,
    "expired": reservation_pb2.RESERVATION_STATE_EXPIRED,
}

# The reservation as the fan sees it: a 'held' row past its expiry is expired,
# whether or not the expiry job has written so yet.
RESERVATION_COLUMNS = """
    r.id, r.user_id, r.concert_id, r.date_id, r.seat_number, r.price,
    CASE WHEN r.state = 'held' AND r.expires_at <= %(now)s THEN 'expired' ELSE r.state END,
    r.created_at, r.expires_at
"""


def hold_state(state: str, expires_at: datetime, now: datetime) -> str:
    """A reservation's state as the fan sees it (RESERVATION_COLUMNS says the same in
    SQL, and held_reservation_guard for a statement that needs it held)."""
    return "expired" if state == "held" and expires_at <= now else state


# The clock's time after a statement's locks, in SQL, for a statement sent in
# the same message as the locks it comes after (Python cannot read the clock
# between them): the `now` the use case read before its transaction, plus the
# real time the transaction has spent so far, its lock waits included. With
# the real clock that is the time after the locks; with a FakeClock, the
# test's time plus the real wait. transaction_timestamp(), not
# statement_timestamp(): in a pipelined message a statement starts when
# PostgreSQL reaches it, after the statement before it waited for its locks.
# Read again in one statement it only grows, so a value the statement returns
# is never earlier than the one any of its conditions decided with.
NOW_AFTER_LOCKS = "(%(now)s + (clock_timestamp() - transaction_timestamp()))"


def held_reservation_guard(at: str = "%(now)s") -> str:
    """hold_state(...) == "held" as an SQL condition on reservations `r`, at the
    time `at` (an SQL expression: %(now)s, or NOW_AFTER_LOCKS)."""
    return f"r.state = 'held' AND r.expires_at > {at}"


def reservation_message(row: Any) -> reservation_pb2.Reservation:
    return reservation_pb2.Reservation(
        reservation_id=str(row[0]),
        user_id=str(row[1]),
        concert_id=str(row[2]),
        date_id=str(row[3]),
        seat_number=row[4],
        price=row[5],
        state=_STATES[row[6]],
        create_time=timestamp(row[7]),
        expire_time=timestamp(row[8]),
    )


def seat_unavailable(date_id: uuid.UUID, seat_number: int, *, started: bool = False) -> Exception:
    metadata = {"date_id": str(date_id), "seat_number": str(seat_number)}
    if started:
        return FailedPrecondition(
            ErrorReason.ERROR_REASON_SEAT_UNAVAILABLE,
            "the performance has started",
            metadata=metadata,
        )
    return AlreadyExists(
        ErrorReason.ERROR_REASON_SEAT_UNAVAILABLE, "the seat is held or sold", metadata=metadata
    )


async def hold_seat(
    ctx: ServiceContext,
    booking: BookingRuntime,
    fan: Fan,
    request: reservation_pb2.ReserveSeatRequest,
) -> reservation_pb2.ReserveSeatResponse:
    violations = Violations()
    date_id = parse_uuid(violations, "date_id", request.date_id)
    if request.seat_number < 1:
        violations.add("seat_number", "must be 1 or more")
    request_id = parse_request_id(violations, request.request_id)
    violations.raise_if_any()
    assert date_id is not None
    settings = ctx.settings

    record = RequestRecord(
        f"ReservationService.ReserveSeat:{fan.user_id}",
        request_id,
        request,
        reservation_pb2.ReserveSeatResponse,
    )
    reservation_id = uuid.uuid4()
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        # Read once the connection is ours: _HOLD adds only the time since BEGIN.
        now = ctx.clock.now()
        expires_at = now + timedelta(seconds=settings.hold_ttl_seconds)
        params = {
            **live_token_params(fan, now),
            "expires": expires_at,
            "reservation": reservation_id,
            "date": date_id,
            "seat": request.seat_number,
            "max_holds": settings.max_holds_per_user,
            **UnitOfWork.unanswered_params(record),
        }
        key = unit.record_statement(record)
        # One message: BEGIN, the request's key (with an id), the token's row
        # lock then the fan's hold cap, and the hold; with no request id,
        # COMMIT too, since the hold writes nothing unless every check passes
        # (one round trip). With an id, the answer is stored in a second.
        results = await unit.send(
            *([key] if key else []),
            lock_token_then(fan.token_id, Lock.of(LockKind.HOLD_CAP, fan.user_id)),
            Statement(_HOLD, params, (Lock.of(LockKind.SEAT, f"{date_id}/{request.seat_number}"),)),
            commit=key is None,
        )
        if key is not None and (replay := await unit.replayed(record, results[0])) is not None:
            return replay
        [(held_count, price, concert_id, start_time, decided_at)] = results[-1]
        if price is None:  # nothing was written: say why
            insist_live(token_row(results[-2]), now, fan)
        if held_count >= settings.max_holds_per_user:
            raise FailedPrecondition(
                ErrorReason.ERROR_REASON_HOLD_LIMIT_REACHED,
                f"at most {settings.max_holds_per_user} seats may be held at once",
                metadata={"max_holds": str(settings.max_holds_per_user)},
            )
        if price is None:
            if start_time is None:
                raise NotFound(
                    ErrorReason.ERROR_REASON_SEAT_NOT_FOUND,
                    "no such date or seat",
                    metadata={"date_id": str(date_id), "seat_number": str(request.seat_number)},
                )
            raise seat_unavailable(date_id, request.seat_number, started=start_time <= decided_at)
        response = reservation_pb2.ReserveSeatResponse(
            reservation=reservation_message(
                (
                    reservation_id,
                    fan.user_id,
                    concert_id,
                    date_id,
                    request.seat_number,
                    price,
                    "held",
                    now,
                    expires_at,
                )
            )
        )
        if (remember := unit.remember_statement(record, response)) is not None:
            await unit.send(remember, commit=True)
    booking.seat_lists.invalidate(date_id)  # this process's lists show the hold at once
    return response


# The hold, in one statement after the fan's hold-cap lock (its snapshot
# therefore sees every hold the fan's earlier calls committed): count the fan's
# live holds, and only under the cap, with the fan's token live and the
# request not already answered, take the seat (the race is decided by this
# UPDATE, see the module's docstring) and insert the reservation. The seat's
# date start is read too, so a refusal needs no second query. Holds and the
# start are judged at NOW_AFTER_LOCKS (a hold that ran out while this waited
# for the token or the hold cap is gone; the time is returned last, for the
# refusal's reason); the token, like insist_live, at the call's %(now)s, which
# also dates the new hold.
_HOLD = f"""
    WITH held AS (
        SELECT count(*) AS n FROM reservations
         WHERE user_id = %(user)s AND state = 'held' AND expires_at > {NOW_AFTER_LOCKS}
    ), won AS (
        UPDATE seats s SET held_until = %(expires)s, reservation_id = %(reservation)s
          FROM concert_dates d, held
         WHERE s.date_id = %(date)s AND s.seat_number = %(seat)s
           AND d.id = s.date_id AND d.start_time > {NOW_AFTER_LOCKS}
           AND NOT s.sold AND (s.held_until IS NULL OR s.held_until <= {NOW_AFTER_LOCKS})
           AND held.n < %(max_holds)s
           AND {LIVE_TOKEN_GUARD}
           AND {UNANSWERED_GUARD}
        RETURNING s.price, d.concert_id
    ), inserted AS (
        INSERT INTO reservations (id, user_id, concert_id, date_id, seat_number, price,
                                  state, created_at, expires_at)
        SELECT %(reservation)s, %(user)s, won.concert_id, %(date)s, %(seat)s, won.price,
               'held', %(now)s, %(expires)s
          FROM won
    )
    SELECT held.n, won.price, won.concert_id,
           (SELECT d.start_time FROM seats s JOIN concert_dates d ON d.id = s.date_id
             WHERE s.date_id = %(date)s AND s.seat_number = %(seat)s),
           {NOW_AFTER_LOCKS}
      FROM held LEFT JOIN won ON true
"""


def reservation_not_found() -> NotFound:
    return NotFound(ErrorReason.ERROR_REASON_RESERVATION_NOT_FOUND, "no such reservation")


async def get_reservation(
    ctx: ServiceContext, fan: Fan, request: reservation_pb2.GetReservationRequest
) -> reservation_pb2.GetReservationResponse:
    violations = Violations()
    reservation_id = parse_uuid(violations, "reservation_id", request.reservation_id)
    violations.raise_if_any()
    async with ctx.pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {RESERVATION_COLUMNS} FROM reservations r"
            " WHERE r.id = %(id)s AND r.user_id = %(user)s",
            {"now": ctx.clock.now(), "id": reservation_id, "user": fan.user_id},
        )
        row = await cursor.fetchone()
    if row is None:
        raise reservation_not_found()
    return reservation_pb2.GetReservationResponse(reservation=reservation_message(row))


async def cancel_reservation(
    ctx: ServiceContext,
    booking: BookingRuntime,
    fan: Fan,
    request: reservation_pb2.CancelReservationRequest,
) -> reservation_pb2.CancelReservationResponse:
    violations = Violations()
    reservation_id = parse_uuid(violations, "reservation_id", request.reservation_id)
    request_id = parse_request_id(violations, request.request_id)
    violations.raise_if_any()

    record = RequestRecord(
        f"ReservationService.CancelReservation:{fan.user_id}",
        request_id,
        request,
        reservation_pb2.CancelReservationResponse,
    )
    async with unit_of_work(ctx.pool, ctx.clock) as unit:
        if (replay := await unit.replay(record)) is not None:
            return replay
        # The reservation row lock orders this against a payment's
        # confirmation of the same reservation.
        cursor = await unit.execute(
            f"SELECT {RESERVATION_COLUMNS} FROM reservations r"
            " WHERE r.id = %(id)s AND r.user_id = %(user)s FOR UPDATE",
            {"now": ctx.clock.now(), "id": reservation_id, "user": fan.user_id},
            locks=[Lock.of(LockKind.RESERVATION, reservation_id)],
        )
        row = await cursor.fetchone()
        if row is None:
            raise reservation_not_found()
        # Judged at the time after the lock: a hold that ran out while this
        # waited for it (a Pay of it held the lock) is expired, not cancelled.
        if (state := hold_state(row[6], row[8], ctx.clock.now())) != "held":
            raise FailedPrecondition(
                ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD,
                f"the reservation is {state}",
                metadata={"state": state},
            )
        await unit.execute(
            "UPDATE reservations SET state = 'cancelled' WHERE id = %s", (reservation_id,)
        )
        await unit.execute(
            "UPDATE seats SET held_until = NULL, reservation_id = NULL"
            " WHERE date_id = %s AND seat_number = %s AND reservation_id = %s AND NOT sold",
            (row[3], row[4], reservation_id),
            locks=[Lock.of(LockKind.SEAT, f"{row[3]}/{row[4]}")],
        )
        response = await unit.remember(
            record,
            reservation_pb2.CancelReservationResponse(
                reservation=reservation_message((*row[:6], "cancelled", *row[7:]))
            ),
        )
    booking.seat_lists.invalidate(uuid.UUID(response.reservation.date_id))
    return response


async def expire_holds(conn: AsyncConnection, clock: Clock) -> int:
    """The hold-expiry job: write down what the clock already decided.

    Readers and writers already treat these holds as gone; this frees the
    rows so indexes stay small. Conditional updates, safe to overlap.
    """
    now = clock.now()
    async with unit_on(conn, clock) as unit:
        cursor = await unit.execute(
            "UPDATE reservations SET state = 'expired' WHERE state = 'held' AND expires_at <= %s",
            (now,),
            locks=[Lock.of(LockKind.RESERVATION)],
        )
        expired = cursor.rowcount
        await unit.execute(
            "UPDATE seats SET held_until = NULL, reservation_id = NULL"
            " WHERE held_until IS NOT NULL AND held_until <= %s AND NOT sold",
            (now,),
            locks=[Lock.of(LockKind.SEAT)],
        )
    return expired
