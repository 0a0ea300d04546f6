"""What booking keeps in this process, built once by the composition root."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from server.booking.gateway import PaymentGateway
from server.booking.module_auth import ModuleSecrets
from server.booking.seat_list_cache import SeatListCache


@dataclass
class BookingRuntime:
    # The payment module (server/booking/gateway.py); tests swap in a faulty one.
    gateway: PaymentGateway
    # ListAvailableSeats pages served from memory for a moment.
    seat_lists: SeatListCache
    # Tells this process's queue that a payment used up a token (token id, its
    # expiry), so its calls refuse the token at once, before the NOTIFY.
    token_completed: Callable[[uuid.UUID, datetime], None]
    # The payment modules allowed to call PaymentCallbackService.
    module_secrets: ModuleSecrets = field(default_factory=ModuleSecrets)
