"""Completing a token by payment, inside the booking's own transaction.

PaymentService.Pay locks the token (require_live_token, or in the same
statement as the reservation) before it takes the money, and completes it
when it records the payment, in the same transaction: the token row lock
serialises concurrent payments of one token, and the conditional update means
a token is counted in completed_count once, whether a payment or the expiry
job ends it first. Payments count it with their date's sold counter in one
statement (server/booking/payment_records.count_sale); complete_token is the
same completion on its own.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from server.db.unit_of_work import Lock, LockKind, UnitOfWork
from server.fan import Fan, token_completed, token_expired, token_invalid
from server.queue import store


async def require_live_token(unit: UnitOfWork, fan: Fan, now: datetime) -> None:
    """Lock the fan's token row (FOR UPDATE) and insist it is live and the fan's."""
    insist_live(await store.get_token(unit, fan.token_id, for_update=True), now, fan)


# insist_live's rule as an SQL condition, for a statement that must write
# nothing unless the caller's token is live and its own (it is sent in the same
# message as the lock, before Python sees the token): parameters %(token)s,
# %(user)s, %(number)s, %(now)s (live_token_params). Checked against
# insist_live in tests/queue/test_live_token_guard.py.
LIVE_TOKEN_GUARD = (
    "EXISTS (SELECT FROM queue_tokens WHERE id = %(token)s AND user_id = %(user)s"
    " AND queue_number = %(number)s AND state = 'live' AND expires_at > %(now)s)"
)


def live_token_params(fan: Fan, now: datetime) -> dict[str, object]:
    return {"token": fan.token_id, "user": fan.user_id, "number": fan.queue_number, "now": now}


def insist_live(token: store.TokenRow | None, now: datetime, fan: Fan | None = None) -> None:
    """The stored token is live, and (given the caller) says what its signed claims say.

    The gate trusts the HMAC alone; a protected change also compares the
    stored token's user and number with the claims, so a token minted with a
    leaked key for someone else's token id changes nothing.
    """
    if token is None or (
        fan is not None and (token.user_id, token.queue_number) != (fan.user_id, fan.queue_number)
    ):
        raise token_invalid()
    if token.state == "completed":
        raise token_completed()
    if not token.is_live(now):
        raise token_expired()


async def complete_token(unit: UnitOfWork, token_id: UUID, now: datetime) -> bool:
    """Mark a live token completed and count it once; True if this call completed it.

    The NOTIFY is delivered when the caller's transaction commits, so every
    process (this one included) learns of the new completed_count then, and
    its gate refuses the completed token from then on. Payments count their
    sale in the same statement instead (server/booking/payment_records.py).
    """
    expires_at = await store.end_token(unit, token_id, "completed", now)
    if expires_at is None:
        return False
    await unit.execute(
        f"WITH {store.ADD_COMPLETED_CTE} SELECT {store.NOTIFY_STATE_CHANGE} FROM state",
        store.completion_params([(token_id, expires_at)], now),
        locks=[Lock.of(LockKind.QUEUE_STATE)],
    )
    return True
