"""Who is calling a queue-protected method: set by the queue gate, per call.

The gate interceptor verifies the queue token, checks admission, and binds a
Fan to the call's context before the servicer runs. Servicers and use cases of
ConcertService, ReservationService and PaymentService read it with current_fan().
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from server.errors import Unauthenticated


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
        raise Unauthenticated("TOKEN_INVALID", "this method requires an admitted queue token")
    return fan
