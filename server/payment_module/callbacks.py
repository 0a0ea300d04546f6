"""The callback outbox's dispatcher: reports each payment taken to the concert
server, until the server answers.

Every pass leases the due callbacks (store.lease_due_callbacks), sends each
one signed (server/module_signing.py) with a deadline, and then:

- PAID: records the server's payment id; the module keeps the money;
- REFUND: gives the money back at once (store.refund) and stops;
- no answer (the server down, slow, restarting, a lost reply, or an error it
  says to retry): schedules the next attempt by backoff.retry_delay.

The outbox is a table, so a module restarted after kill -9 carries on where
it was: a callback that was in flight when it died is sent again once its
lease lapses, and the server's answer to a repeated callback is the first
one. Only an answer ends a callback; the server's errors (its database down,
a signature refused while the secrets are being rolled) are all retried, as
its contract says.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc

from concert.v1 import payment_callback_pb2, payment_callback_pb2_grpc
from server.clock import Clock
from server.module_signing import MODULE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from server.payment_module import store
from server.payment_module.backoff import retry_delay
from server.payment_module.payments import Pool

log = logging.getLogger(__name__)

PAID = payment_callback_pb2.MODULE_PAYMENT_OUTCOME_PAID
REFUND = payment_callback_pb2.MODULE_PAYMENT_OUTCOME_REFUND
# Callbacks sent at once per pass; the rest wait for the next pass.
BATCH = 50
# How long an idle dispatcher sleeps before it looks again, unless woken by a new payment.
IDLE_POLL_SECONDS = 0.5


@dataclass
class CallbackSchedule:
    """The retry schedule and each attempt's deadline."""

    base: timedelta = timedelta(milliseconds=500)
    maximum: timedelta = timedelta(seconds=60)
    timeout: timedelta = timedelta(seconds=5)

    @property
    def lease(self) -> timedelta:
        """How long a sent callback is not sent again: its deadline and a margin."""
        return self.timeout * 2


@dataclass
class CallbackDispatcher:
    pool: Pool
    clock: Clock
    module_id: str
    secret: bytes
    stub: payment_callback_pb2_grpc.PaymentCallbackServiceStub
    schedule: CallbackSchedule = field(default_factory=CallbackSchedule)
    rng: random.Random = field(default_factory=random.Random)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """A new payment is queued: look at once rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Send due callbacks until cancelled (the app's background task)."""
        while True:
            try:
                sent = await self.run_due()
            except Exception:  # the module's database away: try again shortly
                log.exception("callback pass failed")
                sent = 0
            if sent:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)
            except TimeoutError:
                pass

    async def run_due(self) -> int:
        """One pass: send every due callback (up to BATCH); returns how many were sent."""
        now = self.clock.now()
        async with self.pool.connection() as conn:
            due = await store.lease_due_callbacks(conn, now, now + self.schedule.lease, BATCH)
        await asyncio.gather(*(self._send(callback) for callback in due))
        return len(due)

    async def _send(self, callback: store.DueCallback) -> None:
        request = payment_callback_pb2.ConfirmModulePaymentRequest(
            module_payment_id=str(callback.payment_id),
            reservation_id=str(callback.reservation_id),
            amount=callback.amount,
            session_token=callback.session_token,
        )
        timestamp = int(self.clock.now().timestamp())
        metadata = (
            (MODULE_HEADER, self.module_id),
            (TIMESTAMP_HEADER, str(timestamp)),
            (SIGNATURE_HEADER, sign(self.secret, self.module_id, timestamp, request)),
        )
        try:
            answer = await self.stub.ConfirmModulePayment(
                request, metadata=metadata, timeout=self.schedule.timeout.total_seconds()
            )
        except grpc.aio.AioRpcError as error:
            await self._retry_later(callback, f"{error.code().name}: {error.details()}")
            return
        now = self.clock.now()
        async with self.pool.connection() as conn:
            if answer.outcome == PAID:
                if not await store.record_paid(
                    conn, callback.payment_id, answer.payment.payment_id, now
                ):
                    log.error("server kept payment %s the module had refunded", callback.payment_id)
            elif answer.outcome == REFUND:
                await store.refund(conn, callback.payment_id, answer.refund_reason, now)
            else:  # an answer this module does not know: ask again later
                await store.retry_later(
                    conn, callback.payment_id, self._next_attempt(callback, now), "no outcome"
                )
                return
        log.info(
            "payment %s: server answered %s after %d attempt(s)",
            callback.payment_id,
            payment_callback_pb2.ModulePaymentOutcome.Name(answer.outcome),
            callback.attempts,
        )

    async def _retry_later(self, callback: store.DueCallback, error: str) -> None:
        now = self.clock.now()
        at = self._next_attempt(callback, now)
        log.warning(
            "payment %s: callback attempt %d failed (%s); next at %s",
            callback.payment_id,
            callback.attempts,
            error,
            at.isoformat(),
        )
        async with self.pool.connection() as conn:
            await store.retry_later(conn, callback.payment_id, at, error)

    def _next_attempt(self, callback: store.DueCallback, now: datetime) -> datetime:
        return now + retry_delay(
            callback.attempts, self.schedule.base, self.schedule.maximum, self.rng
        )
