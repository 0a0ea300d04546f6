"""The bank-style invariants: what must be true of the database at every moment.

Each invariant is one SQL query over the real schema that counts what it
checked and what breaks the rule. All of them run in ONE read-only
REPEATABLE READ transaction, so they see one consistent snapshot even while
the service is under load: a payment committed half-way through the check
cannot make the books look unbalanced.

Used by the tests after every fault, by the load-test harness, and by hand:

    python -m server check          # OK/VIOLATED per invariant; exit 1 on violation
    python -m server check-books    # the same for the server's book against each
                                    # payment module's (check_books, at the end)

`now` is passed in (the clock's time), never SQL now(), so tests that move a
FakeClock check against the same time the service used. Time-bound rules
(holds and tokens outlive their expiry by at most one job interval) take the
interval as `expiry_grace`.

The money rules describe the default payment module (WalletGateway), whose
book is gateway_charges: charges - payments + refunds = balances, and every
charge that kept money belongs to a completed payment or to an attempt still
being settled by Pay or the reconciliation job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from paymentmodule.v1 import payment_module_pb2 as pm
from psycopg import AsyncConnection

from server.booking.module_books import Verdict, judge, overdue, read_server_book
from server.booking.module_client import ModuleClient
from server.db.unit_of_work import unit_on
from server.queue.store import LAST_DRAWN


@dataclass(frozen=True)
class Rule:
    name: str
    rule: str  # what must hold, in words


@dataclass(frozen=True)
class Invariant(Rule):
    # Returns one row: (rows checked, rows breaking the rule, an example of one).
    # Parameters: %(now)s and %(stale)s (now - expiry_grace).
    query: str


@dataclass(frozen=True)
class Finding:
    invariant: Rule
    checked: int
    violations: int
    example: str | None

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    now: datetime

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def violated(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def lines(self) -> list[str]:
        lines = []
        for f in self.findings:
            verdict = "OK      " if f.ok else "VIOLATED"
            line = f"{verdict} {f.invariant.name}: {f.invariant.rule} (checked {f.checked}"
            if not f.ok:
                line += f", {f.violations} violating, e.g. {f.example}"
            lines.append(line + ")")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


# A queue token that holds a place: not ended, not lapsed.
_LIVE_TOKEN = "t.state = 'live' AND t.expires_at > %(now)s"
# The admission window now, as one row `w`: its capacity and pause, when the
# pass last ran and whether the window moved since capacity last changed, the
# live tokens inside it and waiting, and its reach past the last number drawn
# (the sequence is read outside the snapshot: later draws only shrink the
# reach, so the bound is checked conservatively).
_WINDOW = f"""
    (SELECT q.capacity, q.paused, q.last_pass_at,
            coalesce(q.window_moved_at >= q.capacity_changed_at, false) AS moved_since,
            (SELECT count(*) FROM queue_tokens t WHERE {_LIVE_TOKEN}
                AND t.queue_number <= q.window_limit) AS admitted,
            (SELECT count(*) FROM queue_tokens t WHERE {_LIVE_TOKEN}
                AND t.queue_number > q.window_limit) AS waiting,
            greatest(0, q.window_limit - {LAST_DRAWN}) AS reach
       FROM queue_state q) w
"""

# A reservation that still claims its seat: paid, or held and not yet run out.
_LIVE_CLAIM = "(r.state = 'paid' OR (r.state = 'held' AND r.expires_at > %(now)s))"

INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "seat-claimed-once",
        "no seat is held or sold to two reservations at once",
        f"""
        SELECT count(*), count(*) FILTER (WHERE claims > 1),
               min(seat) FILTER (WHERE claims > 1)
          FROM (SELECT r.date_id::text || ' seat ' || r.seat_number AS seat, count(*) AS claims
                  FROM reservations r WHERE {_LIVE_CLAIM}
                 GROUP BY r.date_id, r.seat_number) per_seat
        """,
    ),
    Invariant(
        "seat-row-agrees",
        "a held or sold seat names the reservation holding or owning it, and back",
        f"""
        SELECT count(*), count(*) FILTER (WHERE NOT ok), min(what) FILTER (WHERE NOT ok)
          FROM (
            SELECT 'seat ' || s.date_id || ' #' || s.seat_number AS what,
                   coalesce(r.date_id = s.date_id AND r.seat_number = s.seat_number
                            AND CASE WHEN s.sold THEN r.state = 'paid'
                                     ELSE r.state = 'held' AND r.expires_at = s.held_until END,
                            false) AS ok
              FROM seats s LEFT JOIN reservations r ON r.id = s.reservation_id
             WHERE s.sold OR s.held_until > %(now)s
            UNION ALL
            SELECT 'reservation ' || r.id,
                   coalesce(s.reservation_id = r.id
                            AND CASE WHEN r.state = 'paid' THEN s.sold
                                     ELSE NOT s.sold AND s.held_until = r.expires_at END,
                            false)
              FROM reservations r
              JOIN seats s ON s.date_id = r.date_id AND s.seat_number = r.seat_number
             WHERE {_LIVE_CLAIM}
          ) claims
        """,
    ),
    Invariant(
        "sold-count-agrees",
        "each date's sold_seat_count equals its sold seats",
        """
        SELECT count(*), count(*) FILTER (WHERE d.sold_seat_count <> coalesce(s.sold, 0)),
               min(d.id::text) FILTER (WHERE d.sold_seat_count <> coalesce(s.sold, 0))
          FROM concert_dates d
          LEFT JOIN (SELECT date_id, count(*) AS sold FROM seats WHERE sold GROUP BY date_id) s
            ON s.date_id = d.id
        """,
    ),
    Invariant(
        "sold-seat-paid-once",
        "every sold seat has exactly one completed payment, of its price, and back",
        """
        SELECT count(*), count(*) FILTER (WHERE NOT ok), min(what) FILTER (WHERE NOT ok)
          FROM (
            SELECT 'seat ' || s.date_id || ' #' || s.seat_number AS what,
                   (SELECT count(*) FROM payments p
                      JOIN reservations r ON r.id = p.reservation_id
                     WHERE p.state = 'completed'
                       AND r.date_id = s.date_id AND r.seat_number = s.seat_number) = 1 AS ok
              FROM seats s WHERE s.sold
            UNION ALL
            SELECT 'payment ' || p.id,
                   coalesce(r.state = 'paid' AND p.amount = r.price AND p.user_id = r.user_id
                            AND s.sold AND s.reservation_id = r.id, false)
              FROM payments p
              JOIN reservations r ON r.id = p.reservation_id
              LEFT JOIN seats s ON s.date_id = r.date_id AND s.seat_number = r.seat_number
             WHERE p.state = 'completed'
          ) sold
        """,
    ),
    Invariant(
        "wallet-matches-ledger",
        "every wallet's balance is its ledger's sum and last balance_after, never negative",
        """
        SELECT count(*),
               count(*) FILTER (WHERE w.balance < 0 OR w.balance <> coalesce(l.total, 0)
                                OR w.balance <> coalesce(l.last_after, 0)),
               min(w.user_id::text) FILTER (WHERE w.balance < 0
                                OR w.balance <> coalesce(l.total, 0)
                                OR w.balance <> coalesce(l.last_after, 0))
          FROM wallets w
          LEFT JOIN (SELECT user_id, sum(amount) AS total,
                            (array_agg(balance_after ORDER BY id DESC))[1] AS last_after
                       FROM wallet_ledger GROUP BY user_id) l ON l.user_id = w.user_id
        """,
    ),
    Invariant(
        "money-conserved",
        "charges - payments + refunds = balances, and the gateway's book agrees",
        """
        WITH ledger AS (
            SELECT coalesce(sum(amount) FILTER (WHERE kind = 'charge'), 0) AS charges,
                   coalesce(sum(-amount) FILTER (WHERE kind = 'payment'), 0) AS payments,
                   coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunds
              FROM wallet_ledger
        ), book AS (
            SELECT coalesce(sum(amount) FILTER (WHERE state IN ('charged', 'refunded')), 0)
                       AS taken,
                   coalesce(sum(amount) FILTER (WHERE state = 'refunded'), 0) AS returned
              FROM gateway_charges
        ), balances AS (SELECT coalesce(sum(balance), 0) AS total FROM wallets)
        SELECT 1, (charges - payments + refunds <> total OR payments <> taken
                   OR refunds <> returned)::int,
               format('charges %%s - payments %%s + refunds %%s vs balances %%s;'
                      ' gateway took %%s, returned %%s',
                      charges, payments, refunds, total, taken, returned)
          FROM ledger, book, balances
        """,
    ),
    Invariant(
        "charge-accounted",
        "money a charge kept buys a completed payment or is still being settled, and back",
        """
        SELECT count(*), count(*) FILTER (WHERE NOT ok), min(what) FILTER (WHERE NOT ok)
          FROM (
            SELECT 'charge ' || g.key AS what,
                   EXISTS (SELECT 1 FROM payments p WHERE p.charge_key = g.key
                              AND p.state = 'completed' AND p.amount = g.amount)
                   OR EXISTS (SELECT 1 FROM payment_attempts a WHERE a.id = g.key
                                 AND a.state IN ('charging', 'refunding')) AS ok
              FROM gateway_charges g WHERE g.state = 'charged'
            UNION ALL
            SELECT 'payment ' || p.id,
                   EXISTS (SELECT 1 FROM gateway_charges g WHERE g.key = p.charge_key
                              AND g.state = 'charged' AND g.amount = p.amount)
              FROM payments p WHERE p.state = 'completed' AND p.module_id IS NULL
          ) money
        """,
    ),
    Invariant(
        "module-payment-settled-once",
        "a module's payment is recorded as a payment or as a refund request, never both",
        """
        SELECT count(*), count(*) FILTER (WHERE both_ways), min(what) FILTER (WHERE both_ways)
          FROM (
            SELECT p.module_id || '/' || p.module_payment_id AS what,
                   EXISTS (SELECT 1 FROM module_refund_requests q
                            WHERE q.module_id = p.module_id
                              AND q.module_payment_id = p.module_payment_id) AS both_ways
              FROM payments p WHERE p.module_id IS NOT NULL
          ) module_payments
        """,
    ),
    Invariant(
        "token-counted-once",
        "completed_count equals the tokens that ended (each counted once, none lost)",
        """
        SELECT ended, (coalesce(completed, 0) <> ended)::int,
               format('completed_count %%s, ended tokens %%s', completed, ended)
          FROM (SELECT count(*) AS ended FROM queue_tokens WHERE state <> 'live') t
          LEFT JOIN (SELECT completed_count AS completed FROM queue_state) q ON true
        """,
    ),
    Invariant(
        "queue-lapses-counted",
        "every expired token is counted once as lapsed, inside the window or waiting",
        """
        SELECT expired, (lapsed <> expired)::int,
               format('lapsed_admitted + lapsed_waiting %%s, expired tokens %%s', lapsed, expired)
          FROM (SELECT count(*) AS expired FROM queue_tokens WHERE state = 'expired') t,
               (SELECT lapsed_admitted + lapsed_waiting AS lapsed FROM queue_state) q
        """,
    ),
    Invariant(
        "queue-bounded",
        "live admitted tokens plus the window's reach past the last number drawn are at most"
        " capacity (a lowered capacity is exempt until the window moves again)",
        f"""
        SELECT 1, (admitted + reach > capacity AND moved_since)::int,
               format('admitted %%s + reach %%s > capacity %%s', admitted, reach, capacity)
          FROM {_WINDOW}
        """,
    ),
    Invariant(
        "queue-live",
        "while places are free and fans wait, the admission pass runs (within 2 s) and lets"
        " them in",
        f"""
        SELECT 1, (NOT paused AND admitted + reach < capacity AND waiting > 0
                   AND coalesce(last_pass_at < %(now)s - interval '2 seconds', true))::int,
               format('%%s free places, %%s waiting, last pass %%s',
                      capacity - admitted - reach, waiting, last_pass_at)
          FROM {_WINDOW}
        """,
    ),
    Invariant(
        "one-live-token-per-user",
        "a fan holds at most one live queue token",
        """
        SELECT count(*), count(*) FILTER (WHERE live > 1),
               min(user_id::text) FILTER (WHERE live > 1)
          FROM (SELECT user_id, count(*) AS live FROM queue_tokens WHERE state = 'live'
                 GROUP BY user_id) per_user
        """,
    ),
    Invariant(
        "hold-expiry-bounded",
        "no hold outlives its expiry by more than one job interval",
        """
        SELECT count(*), count(*) FILTER (WHERE expires_at <= %(stale)s),
               min(what) FILTER (WHERE expires_at <= %(stale)s)
          FROM (
            SELECT 'reservation ' || id AS what, expires_at FROM reservations
             WHERE state = 'held'
            UNION ALL
            SELECT 'seat ' || date_id || ' #' || seat_number, held_until FROM seats
             WHERE held_until IS NOT NULL
          ) holds
        """,
    ),
    Invariant(
        "token-expiry-bounded",
        "no live queue token outlives its expiry by more than one job interval",
        """
        SELECT count(*), count(*) FILTER (WHERE expires_at <= %(stale)s),
               min(id::text) FILTER (WHERE expires_at <= %(stale)s)
          FROM queue_tokens WHERE state = 'live'
        """,
    ),
)


async def check_invariants(
    conn: AsyncConnection,
    now: datetime,
    *,
    expiry_grace: timedelta,
    invariants: Sequence[Invariant] = INVARIANTS,
) -> Report:
    """Check every invariant on one snapshot. conn must be idle (autocommit, no transaction)."""
    params = {"now": now, "stale": now - expiry_grace}
    findings = []
    async with unit_on(conn, snapshot=True) as unit:
        for invariant in invariants:
            cursor = await unit.execute(invariant.query, params)
            row = await cursor.fetchone()
            assert row is not None
            findings.append(Finding(invariant, int(row[0]), int(row[1]), row[2]))
    return Report(tuple(findings), now)


async def check_database(url: str, now: datetime, *, expiry_grace: timedelta) -> Report:
    """The same, on a connection of its own (for the harness and the command line)."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, options="-c statement_timeout=60000 -c TimeZone=UTC"
    ) as conn:
        return await check_invariants(conn, now, expiry_grace=expiry_grace)


# The invariants between the server's book and each payment module's (with an
# address): read with the module's ListPayments, judged by the rules the books
# reconciliation job applies (server/booking/module_books.py).
MODULE_CHARGE_SETTLED = Rule(
    "module-charge-settled",
    "every module charge is either a server payment or refunded, never both, never neither"
    " for longer than one reconciliation interval",
)
MODULE_PAYMENT_BACKED = Rule(
    "module-payment-backed",
    "every payment the server recorded from a module is a charge the module kept, of that amount",
)


@dataclass
class _Tally:
    rule: Rule
    checked: int = 0
    violations: int = 0
    example: str | None = None

    def add(self, broken: bool, what: str) -> None:
        self.checked += 1
        if broken:
            self.violations += 1
            self.example = self.example or what

    def finding(self) -> Finding:
        return Finding(self.rule, self.checked, self.violations, self.example)


async def check_books(
    conn: AsyncConnection, clients: Sequence[ModuleClient], now: datetime, *, interval: timedelta
) -> Report:
    """Both books, whole, for every module client. The server's book is read
    first, then the module's: a sale committed in between shows as a charge
    not yet reported (a violation only once older than the interval), and a
    server payment always finds its charge. A module that cannot be read
    raises grpc.aio.AioRpcError."""
    settled, backed = _Tally(MODULE_CHARGE_SETTLED), _Tally(MODULE_PAYMENT_BACKED)
    for client in clients:
        book = await read_server_book(conn, client.module_id)
        seen: set[str] = set()
        async for page in client.pages():
            for payment in page:
                seen.add(payment.payment_id)
                what = f"{client.module_id}/{payment.payment_id}"
                verdict = judge(payment, book, now, interval)
                if payment.state != pm.MODULE_PAYMENT_STATE_DECLINED:
                    broken = verdict in (Verdict.BOTH, Verdict.UNREPORTED) or (
                        verdict is Verdict.REFUND_DUE and overdue(payment, now, interval)
                    )
                    settled.add(broken, f"{what} {verdict.value}")
                if payment.payment_id in book.paid:
                    kept = verdict not in (Verdict.UNBACKED, Verdict.BOTH)
                    backed.add(not kept, f"{what} {verdict.value}")
        for missing in sorted(book.paid.keys() - seen):
            backed.add(True, f"{client.module_id}/{missing} not in the module's book")
    return Report((settled.finding(), backed.finding()), now)
