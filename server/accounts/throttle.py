"""Sign-in throttling: budgets of password attempts, reserved before the hash.

Three budgets, each a count of failed attempts within FAILURE_WINDOW:

- per (email, client address), small: a guesser at one address gets a few tries
  at one account;
- per client address, across emails: one address spraying many accounts;
- per email, across addresses, large: a distributed attack on one account.

An attacker's failures fill their own (email, address) and address budgets
long before the email's: a fan signing in from their own address is refused
only if at least EMAIL_LIMIT / PAIR_LIMIT addresses attack their email at
once. Even then a fan who shows a session credential this account was issued
before (`previous_session_token`, up to 30 days old) is not counted against
the email's budget, only against their own address's: a botnet can spend an
email's budget, not a past sign-in (docs/reliability.md).

An IPv6 client is budgeted by its /64: one host usually holds a whole /64, so
per-address budgets would otherwise give it 2^64 fresh addresses.

An attempt is reserved in every budget before its password is hashed, in one
synchronous step on the event loop (atomic within the process): a burst of N
concurrent guesses evaluates at most the budget's worth of hashes, not N. A
success releases its reservation and clears its (email, address) failures; a
failure keeps it. Budgets are per process.

Memory is bounded per budget (MAX_KEYS): past it, the least recently touched
key is dropped, one at a time, never everything at once.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

FAILURE_WINDOW = timedelta(minutes=5)
PAIR_LIMIT = 5
ADDRESS_LIMIT = 20
EMAIL_LIMIT = 100
MAX_KEYS = 100_000


class _Budget:
    """Recent attempts per key, at most `limit` each, for at most `max_keys` keys (LRU)."""

    def __init__(self, limit: int, max_keys: int) -> None:
        self.limit = limit
        self._max_keys = max_keys
        self._attempts: OrderedDict[str, deque[datetime]] = OrderedDict()

    def wait(self, key: str, now: datetime) -> float | None:
        """Seconds until this key has room again; None if it has room now."""
        attempts = self._attempts.get(key)
        if attempts is None:
            return None
        self._attempts.move_to_end(key)  # an active key is the last to be forgotten
        while attempts and attempts[0] <= now - FAILURE_WINDOW:
            attempts.popleft()
        if len(attempts) < self.limit:
            return None
        return max((attempts[0] + FAILURE_WINDOW - now).total_seconds(), 0.001)

    def add(self, key: str, now: datetime) -> None:
        attempts = self._attempts.get(key)
        if attempts is None:
            attempts = self._attempts[key] = deque(maxlen=self.limit)
            while len(self._attempts) > self._max_keys:
                self._attempts.popitem(last=False)
        else:
            self._attempts.move_to_end(key)
        attempts.append(now)

    def remove(self, key: str, when: datetime) -> None:
        attempts = self._attempts.get(key)
        if attempts is not None and when in attempts:
            attempts.remove(when)

    def clear(self, key: str) -> None:
        self._attempts.pop(key, None)

    def __len__(self) -> int:
        return len(self._attempts)


@dataclass(frozen=True)
class Reservation:
    """One attempt, counted in its budgets until settled."""

    email: str
    address: str  # the budget's key: the address, or an IPv6 address's /64
    at: datetime
    email_counted: bool = True


class SignInThrottle:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._pairs = _Budget(PAIR_LIMIT, max_keys)
        self._addresses = _Budget(ADDRESS_LIMIT, max_keys)
        self._emails = _Budget(EMAIL_LIMIT, max_keys)

    def reserve(
        self, email: str, address: str, now: datetime, *, proven: bool = False
    ) -> Reservation | float:
        """Count an attempt now, or the seconds to wait when a budget is spent.

        proven: the caller showed a past session of this account; the email's
        budget (which a distributed attack can spend) neither stops nor counts it.
        """
        address = budget_address(address)
        waits = [
            self._pairs.wait(_pair(email, address), now),
            self._addresses.wait(address, now),
            None if proven else self._emails.wait(email, now),
        ]
        spent = [w for w in waits if w is not None]
        if spent:
            return max(spent)
        self._pairs.add(_pair(email, address), now)
        self._addresses.add(address, now)
        if not proven:
            self._emails.add(email, now)
        return Reservation(email, address, now, email_counted=not proven)

    def succeeded(self, reservation: Reservation) -> None:
        """The password was right: the attempt is not a failure, the pair starts afresh."""
        self._pairs.clear(_pair(reservation.email, reservation.address))
        self.release(reservation)

    def release(self, reservation: Reservation) -> None:
        """The attempt was never evaluated (the hasher was busy): it costs nothing."""
        self._pairs.remove(_pair(reservation.email, reservation.address), reservation.at)
        self._addresses.remove(reservation.address, reservation.at)
        if reservation.email_counted:
            self._emails.remove(reservation.email, reservation.at)

    def tracked_keys(self) -> int:
        return len(self._pairs) + len(self._addresses) + len(self._emails)


def _pair(email: str, address: str) -> str:
    return f"{address} {email}"


def budget_address(address: str) -> str:
    """The key of an address's budgets: an IPv6 address's /64, any other as it is."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:  # not an IP address (a unix socket peer, say): its own key
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
