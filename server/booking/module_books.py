"""Reconciliation between the server's books and each payment module's.

A module charge (money the module took and reported by callback) must end as
exactly one of: a server payment (the seat sold, the module keeps the money)
or a refund (the server answered REFUND, or asked with RefundPayment). The
module's outbox normally gets it there in seconds; this is what settles, or
reports, what is left:

- the server refused the charge (a module_refund_requests row) and the module
  has not refunded it (it crashed between the answer and the refund, or lost
  the row): ask it with RefundPayment, idempotent; a failure is tried again
  at the next run;
- the module took the money and the server has neither a payment nor a
  refund request, for longer than one interval: an anomaly, counted, logged
  and published as a metric. Nothing is recorded here: delivery is the
  module's outbox's job (it retries until the server answers), and only the
  callback carries the fan's session that the sale needs;
- the server recorded a payment for a charge the module says it refunded
  (both), or for one the module never kept or kept for another amount: a
  broken invariant, logged as an error and published, never "fixed" by
  guessing which book is right.

The job (`module-books-reconciliation`, every CONCERT_EXPIRY_INTERVAL_SECONDS
like the payment reconciliation job) reads each module's payments of the
last WINDOW; `python -m server check-books` (server/invariants.py) judges the
whole of both books by the same rules.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from paymentmodule.v1 import payment_module_pb2 as pm
from psycopg import AsyncConnection

from server.booking.module_client import ModuleClient

log = logging.getLogger(__name__)

# How far back the job reads each module's book (by the charge's creation):
# a charge left unsettled longer than this is beyond the job, and still
# reported by check-books, which reads the whole book.
WINDOW = timedelta(hours=24)


class Verdict(enum.Enum):
    """What a module's payment is, set against the server's book."""

    # A decline, a refund, or a charge the server recorded: nothing to do.
    SETTLED = "settled"
    # Taken, not yet reported, younger than one interval: the outbox's business.
    REPORTING = "reporting"
    # The server refused it and the module still holds the money: refund it.
    REFUND_DUE = "refund_due"
    # Taken, neither recorded nor refused by the server, for over an interval.
    UNREPORTED = "unreported"
    # Refunded at the module and a payment at the server.
    BOTH = "both"
    # A payment at the server that the module did not keep (declined), or of
    # another amount.
    UNBACKED = "unbacked"


@dataclass(frozen=True)
class ServerBook:
    """What the server recorded of one module's payments, by module payment id."""

    paid: dict[str, int] = field(default_factory=dict)  # the payment's amount
    refused: set[str] = field(default_factory=set)  # a refund request was recorded


def judge(
    payment: pm.ModulePayment, book: ServerBook, now: datetime, interval: timedelta
) -> Verdict:
    """The verdict on one module payment (pure: the rules in one place)."""
    paid = book.paid.get(payment.payment_id)
    if payment.state == pm.MODULE_PAYMENT_STATE_REFUNDED:
        return Verdict.SETTLED if paid is None else Verdict.BOTH
    if payment.state != pm.MODULE_PAYMENT_STATE_SUCCEEDED:  # declined: nothing taken
        return Verdict.SETTLED if paid is None else Verdict.UNBACKED
    if paid is not None:
        return Verdict.SETTLED if paid == payment.amount else Verdict.UNBACKED
    if payment.payment_id in book.refused:
        return Verdict.REFUND_DUE
    return Verdict.UNREPORTED if overdue(payment, now, interval) else Verdict.REPORTING


def overdue(payment: pm.ModulePayment, now: datetime, interval: timedelta) -> bool:
    """Taken more than one interval ago: past the time a charge may be neither
    a server payment nor refunded."""
    return payment.create_time.ToDatetime(tzinfo=UTC) <= now - interval


# A module's payments and refund requests in the server's book; `ids` NULL: all.
_SERVER_PAYMENTS = (
    "SELECT module_payment_id, amount FROM payments WHERE module_id = %(module)s"
    " AND (%(ids)s::text[] IS NULL OR module_payment_id = ANY(%(ids)s::text[]))"
)
_SERVER_REFUSALS = (
    "SELECT module_payment_id FROM module_refund_requests WHERE module_id = %(module)s"
    " AND (%(ids)s::text[] IS NULL OR module_payment_id = ANY(%(ids)s::text[]))"
)


async def read_server_book(
    conn: AsyncConnection, module_id: str, payment_ids: Sequence[str] | None = None
) -> ServerBook:
    """The server's payments and refund requests of a module: of these module
    payment ids, or all of them (None). Autocommit reads; each set is read
    whole, so a callback committing in between can only add a payment that
    then shows as SETTLED."""
    ids = None if payment_ids is None else list(payment_ids)
    params = {"module": module_id, "ids": ids}
    cursor = await conn.execute(_SERVER_PAYMENTS, params)
    paid = {str(row[0]): int(row[1]) for row in await cursor.fetchall()}
    cursor = await conn.execute(_SERVER_REFUSALS, params)
    refused = {str(row[0]) for row in await cursor.fetchall()}
    return ServerBook(paid, refused)


@dataclass
class BooksRun:
    """What one run found and did, summed over the modules (the job's result)."""

    listed: int = 0
    refunded: int = 0
    refund_failed: int = 0
    unreported: int = 0
    both: int = 0
    unbacked: int = 0
    unreachable: int = 0

    def counts(self) -> dict[str, int]:
        return dict(vars(self))

    @property
    def news(self) -> bool:
        return any(value for key, value in vars(self).items() if key != "listed")


async def reconcile_module_books(
    conn: AsyncConnection,
    clients: Iterable[ModuleClient],
    now: datetime,
    interval: timedelta,
) -> BooksRun:
    """One run of the job over every module with an address."""
    run = BooksRun()
    for client in clients:
        try:
            await _reconcile_module(conn, client, now, interval, run)
        except grpc.aio.AioRpcError as error:
            # Down, slow, or refusing the signature: the next run reads it again.
            run.unreachable += 1
            log.warning(
                "books reconciliation: module %s unreachable (%s: %s); next run tries again",
                client.module_id,
                error.code().name,
                error.details(),
            )
    return run


async def _reconcile_module(
    conn: AsyncConnection, client: ModuleClient, now: datetime, interval: timedelta, run: BooksRun
) -> None:
    async for page in client.pages(start=now - WINDOW):
        run.listed += len(page)
        book = await read_server_book(conn, client.module_id, [p.payment_id for p in page])
        for payment in page:
            verdict = judge(payment, book, now, interval)
            if verdict is Verdict.REFUND_DUE:
                await _refund(client, payment, run)
            elif verdict is Verdict.UNREPORTED:
                run.unreported += 1
                log.warning(
                    "books: module %s payment %s (reservation %s, %d) taken at %s and never"
                    " reported to the server; the module's outbox owns its delivery",
                    client.module_id,
                    payment.payment_id,
                    payment.reservation_id,
                    payment.amount,
                    payment.create_time.ToJsonString(),
                )
            elif verdict is Verdict.BOTH:
                run.both += 1
                log.error(
                    "books violated: module %s payment %s is refunded there and a payment here",
                    client.module_id,
                    payment.payment_id,
                )
            elif verdict is Verdict.UNBACKED:
                run.unbacked += 1
                log.error(
                    "books violated: module %s payment %s is %s there (amount %d) and a payment"
                    " of %d here",
                    client.module_id,
                    payment.payment_id,
                    pm.ModulePaymentState.Name(payment.state),
                    payment.amount,
                    book.paid[payment.payment_id],
                )


async def _refund(client: ModuleClient, payment: pm.ModulePayment, run: BooksRun) -> None:
    try:
        refunded = await client.refund(payment.payment_id)
    except grpc.aio.AioRpcError as error:
        # PAYMENT_KEPT_BY_SERVER (the module recorded PAID while the server
        # recorded a refusal) stays here run after run, in the log and metric.
        run.refund_failed += 1
        log.warning(
            "books: refund of module %s payment %s failed (%s: %s); next run tries again",
            client.module_id,
            payment.payment_id,
            error.code().name,
            error.details(),
        )
        return
    run.refunded += 1
    log.info(
        "books: module %s refunded payment %s the server had refused (%s)",
        client.module_id,
        refunded.payment_id,
        refunded.refund_reason,
    )
