"""What the account use cases share within one process: the hasher and the throttle."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.accounts.passwords import PasswordHasher

# Failed sign-ins tolerated per email within the window before answering
# RESOURCE_EXHAUSTED. Per process: a slowdown for guessers, not a lockout.
MAX_FAILURES = 10
FAILURE_WINDOW = timedelta(minutes=5)
_MAX_TRACKED_EMAILS = 100_000


class SignInThrottle:
    """Counts recent failed sign-ins per email, in memory."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[datetime]] = {}

    def retry_after(self, email: str, now: datetime) -> float | None:
        """Seconds to wait before trying this email again, or None if allowed now."""
        failures = self._failures.get(email)
        if not failures:
            return None
        while failures and failures[0] <= now - FAILURE_WINDOW:
            failures.popleft()
        if len(failures) < MAX_FAILURES:
            return None
        return (failures[0] + FAILURE_WINDOW - now).total_seconds()

    def record_failure(self, email: str, now: datetime) -> None:
        if len(self._failures) >= _MAX_TRACKED_EMAILS and email not in self._failures:
            self._failures.clear()  # bounded memory beats perfect counting under a flood
        self._failures.setdefault(email, deque(maxlen=MAX_FAILURES)).append(now)

    def record_success(self, email: str) -> None:
        self._failures.pop(email, None)


@dataclass
class AccountRuntime:
    hasher: PasswordHasher
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
