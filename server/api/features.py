"""The features' runtimes, as the servicers receive them from the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from server.accounts.runtime import AccountRuntime
from server.booking.runtime import BookingRuntime
from server.queue.runtime import QueueRuntime


@dataclass
class Features:
    """Built once by server/app.py: the accounts' hasher and throttle, the queue's
    admission state in memory, booking's payment module and seat lists."""

    accounts: AccountRuntime
    queue: QueueRuntime
    booking: BookingRuntime
