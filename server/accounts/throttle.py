"""Sign-in throttling: budgets of password attempts, reserved before the hash,
shared by every server process through PostgreSQL.

Three budgets, each a count of attempts within FAILURE_WINDOW:

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

An attempt is a row of sign_in_attempts, reserved before its password is
hashed in one transaction that takes the email's and the address's advisory
locks, counts the three budgets and inserts the row only if all have room. So
a burst of N concurrent guesses evaluates at most the budget's worth of
hashes, not N, however many processes and replicas it is spread over (the
budgets were per process: with the manifests' 3 replicas, and more as the
autoscaler adds them under attack, a guesser got 3 x the budget and more). A
failure keeps its row; a success deletes it and its (email, address) pair's
failures (a fan's typos before the right password stop counting anywhere),
right after the call is answered, so the fan does not wait for it; an attempt
never evaluated (the call cancelled) deletes it.

Only calls that hold a hashing place reach the budgets, so their writes are
bounded by the hashing rate (tens a second per core), not by a storm's call
rate; the `sign_in_attempts.prune` job deletes rows once they are out of the
window, so the table holds at most a window's worth of hashed attempts. Nothing
is forgotten early: a budget lasts its whole window whatever else is stored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.db.pruning import delete_in_batches
from server.db.unit_of_work import Lock, LockKind, Statement, UnitOfWork, unit_of_work

log = logging.getLogger(__name__)

FAILURE_WINDOW = timedelta(minutes=5)
PAIR_LIMIT = 5
ADDRESS_LIMIT = 20
EMAIL_LIMIT = 100

PRUNE_JOB = "sign_in_attempts.prune"


@dataclass(frozen=True)
class Reservation:
    """One attempt, counted in its budgets until settled."""

    id: int
    email: str
    address: str  # the budget's key: the address, or an IPv6 address's /64
    email_counted: bool = True


# Counts the budgets and inserts the attempt only if every one has room; returns
# the new row's id (NULL if refused) and when the last spent budget has room
# again. A budget's subquery finds the attempt whose leaving the window gives it
# room again (its limit-th newest within the window), NULL while it has room.
_RESERVE = """
WITH spent AS (
    SELECT
        (SELECT attempted_at FROM sign_in_attempts
          WHERE address = %(address)s AND email = %(email)s AND attempted_at > %(since)s
          ORDER BY attempted_at DESC OFFSET %(pair_limit)s - 1 LIMIT 1) AS pair,
        (SELECT attempted_at FROM sign_in_attempts
          WHERE address = %(address)s AND attempted_at > %(since)s
          ORDER BY attempted_at DESC OFFSET %(address_limit)s - 1 LIMIT 1) AS address,
        CASE WHEN %(email_counted)s THEN
        (SELECT attempted_at FROM sign_in_attempts
          WHERE email = %(email)s AND email_counted AND attempted_at > %(since)s
          ORDER BY attempted_at DESC OFFSET %(email_limit)s - 1 LIMIT 1) END AS email
), added AS (
    INSERT INTO sign_in_attempts (email, address, email_counted, attempted_at)
    SELECT %(email)s, %(address)s, %(email_counted)s, %(now)s FROM spent
     WHERE pair IS NULL AND address IS NULL AND email IS NULL
    RETURNING id
)
SELECT (SELECT id FROM added), GREATEST(pair, address, email) FROM spent
"""


class SignInThrottle:
    """The three budgets, in the database every process shares."""

    def __init__(self, pool: AsyncConnectionPool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock
        self._settling: set[asyncio.Task[None]] = set()  # succeeded_soon's deletes

    async def reserve(
        self, email: str, address: str, now: datetime, *, proven: bool = False
    ) -> Reservation | float:
        """Count an attempt now, or the seconds to wait when a budget is spent.

        proven: the caller showed a past session of this account; the email's
        budget (which a distributed attack can spend) neither stops nor counts it.
        """
        address = budget_address(address)
        params = {
            "pair_limit": PAIR_LIMIT,
            "address_limit": ADDRESS_LIMIT,
            "email_limit": EMAIL_LIMIT,
            "email": email,
            "address": address,
            "email_counted": not proven,
            "now": now,
            "since": now - FAILURE_WINDOW,
        }
        # The email's lock, then the address's (LockKind's order): every attempt
        # that shares a budget with this one waits here, so the counts it reads
        # are those of every attempt reserved before it, in any process.
        locks = UnitOfWork.lock_statements(
            Lock.of(LockKind.SIGN_IN_EMAIL, email), Lock.of(LockKind.SIGN_IN_ADDRESS, address)
        )
        async with unit_of_work(self._pool, self._clock) as unit:
            # One round trip: the locks, then the count and insert (its own
            # snapshot, taken once the locks are held), and COMMIT.
            *_, [(reserved_id, spent_until)] = await unit.send(
                *locks,
                Statement(_RESERVE, params),
                commit=True,
            )
        if reserved_id is None:
            return max((spent_until + FAILURE_WINDOW - now).total_seconds(), 0.001)
        return Reservation(reserved_id, email, address, email_counted=not proven)

    async def succeeded(self, reservation: Reservation) -> None:
        """The password was right: the attempt is not a failure, the pair starts afresh."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM sign_in_attempts WHERE id = %s OR (address = %s AND email = %s)",
                (reservation.id, reservation.address, reservation.email),
            )

    def succeeded_soon(self, reservation: Reservation) -> None:
        """succeeded(), in the background: the caller answers without waiting for
        its round trip. Until it commits (about a millisecond), the attempt counts
        as a failure, the safe side; if it cannot, until it leaves the window."""
        task = asyncio.create_task(self._settle(reservation), name="sign-in.succeeded")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, reservation: Reservation) -> None:
        try:
            await self.succeeded(reservation)
        except Exception:  # no caller is waiting for it: say so in the log
            log.warning("a successful sign-in's attempt could not be cleared", exc_info=True)

    async def settled(self) -> None:
        """Wait until every succeeded_soon() has finished (the server's stop, before
        its pool closes)."""
        while self._settling:
            await asyncio.gather(*self._settling)

    async def release(self, reservation: Reservation) -> None:
        """The attempt was never evaluated (the call cancelled, the hasher gone): it
        costs nothing. If the database cannot be reached, it counts as a failure
        until it leaves the window (the safe side)."""
        try:
            async with self._pool.connection() as conn:
                await conn.execute("DELETE FROM sign_in_attempts WHERE id = %s", (reservation.id,))
        except Exception:  # the caller's own error is the one to answer
            log.warning("an unevaluated sign-in attempt could not be released", exc_info=True)


async def prune_attempts(conn: AsyncConnection, now: datetime) -> int:
    """Delete attempts out of every budget's window, in bounded batches (server/db/pruning.py)."""
    return await delete_in_batches(conn, "sign_in_attempts", "attempted_at", now - FAILURE_WINDOW)


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
