"""Who is calling a queue-protected method: set by the queue gate, per call.

The gate interceptor verifies the queue token, checks admission, and binds a
Fan to the call's context before the servicer runs. Servicers and use cases of
ConcertService, ReservationService and PaymentService read it with current_fan().
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from server.errors import ErrorReason, FailedPrecondition, Unauthenticated


@dataclass(frozen=True)
class Fan:
    user_id: uuid.UUID
    token_id: uuid.UUID
    queue_number: int


fan_context: ContextVar[Fan | None] = ContextVar("fan", default=None)


def current_fan() -> Fan:
    """The admitted fan of this call; UNAUTHENTICATED if no gate bound one."""
    fan = fan_context.get()
    if fan is None:
        raise token_invalid()
    return fan


# What a caller is told about its queue token: one reason, one message, written
# once. The gate (from the signed claims and this process's memory), the
# presence calls (GetQueueStatus, WatchQueueStatus) and the protected changes
# (from the stored row, under its lock) all refuse a token with these.


def token_invalid() -> Unauthenticated:
    """Missing, malformed, signed by no known key, unknown, or not the caller's."""
    return Unauthenticated(
        ErrorReason.ERROR_REASON_TOKEN_INVALID, "a valid queue token is required"
    )


def token_expired() -> Unauthenticated:
    return Unauthenticated(
        ErrorReason.ERROR_REASON_TOKEN_EXPIRED,
        "the queue token has expired; take a new one with IssueToken",
    )


def token_completed() -> FailedPrecondition:
    return FailedPrecondition(
        ErrorReason.ERROR_REASON_TOKEN_COMPLETED, "the queue token was used up by a payment"
    )
