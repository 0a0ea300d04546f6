"""The server as a payment module's merchant: the two calls it makes to a module
(paymentmodule.v1 ListPayments and RefundPayment), signed with the module's
shared secret (server/module_signing.py).

A module is called only if its line of CONCERT_PAYMENT_MODULE_SECRETS_FILE
names an address (module_auth.ModuleSecrets.addresses). The channel is
plaintext, as the sandbox module serves; a real provider's would be TLS.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2
from paymentmodule.v1 import payment_module_pb2 as pm
from paymentmodule.v1 import payment_module_pb2_grpc

from server.booking.module_auth import ModuleSecrets
from server.clock import Clock
from server.module_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, list_text, mac, refund_text

# One page of the module's book per call.
PAGE_SIZE = 500
# Each call's deadline: a module that does not answer is tried again next run.
CALL_TIMEOUT_SECONDS = 10.0
# The refund request ids the server sends are derived from the module payment
# id in this namespace, so a retried refund repeats the same request.
_REFUND_REQUEST_IDS = uuid.UUID("0b7e3f5c-93a4-4f0e-8f7e-5d1c2a9b6e31")


@dataclass
class ModuleClient:
    """One module, as its merchant calls it."""

    module_id: str
    secret: bytes
    stub: payment_module_pb2_grpc.PaymentModuleServiceStub
    clock: Clock

    async def pages(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> AsyncIterator[list[pm.ModulePayment]]:
        """The module's book created in [start, end) (None: unbounded), page by page."""
        request = pm.ListPaymentsRequest(page_size=PAGE_SIZE)
        if start is not None:
            request.start_time.CopyFrom(_timestamp(start))
        if end is not None:
            request.end_time.CopyFrom(_timestamp(end))
        while True:
            timestamp = self._timestamp()
            text = list_text(
                self.module_id,
                timestamp,
                _micros(request.start_time) if start is not None else None,
                _micros(request.end_time) if end is not None else None,
                request.page_size,
                request.page_token,
            )
            reply = await self.stub.ListPayments(
                request, metadata=self._signed(timestamp, text), timeout=CALL_TIMEOUT_SECONDS
            )
            yield list(reply.payments)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    async def refund(self, payment_id: str) -> pm.ModulePayment:
        """Ask the module to give a payment's money back (idempotent there; the
        same request id on every retry)."""
        request = pm.RefundPaymentRequest(
            payment_id=payment_id,
            request_id=str(uuid.uuid5(_REFUND_REQUEST_IDS, f"{self.module_id}/{payment_id}")),
        )
        timestamp = self._timestamp()
        text = refund_text(self.module_id, timestamp, request.payment_id, request.request_id)
        reply = await self.stub.RefundPayment(
            request, metadata=self._signed(timestamp, text), timeout=CALL_TIMEOUT_SECONDS
        )
        return reply.payment

    def _timestamp(self) -> int:
        return int(self.clock.now().timestamp())

    def _signed(self, timestamp: int, text: bytes) -> tuple[tuple[str, str], ...]:
        return ((TIMESTAMP_HEADER, str(timestamp)), (SIGNATURE_HEADER, mac(self.secret, text)))


@asynccontextmanager
async def module_clients(secrets: ModuleSecrets, clock: Clock) -> AsyncIterator[list[ModuleClient]]:
    """A client for every configured module with an address, each on a channel
    of its own, closed on exit."""
    channels = {
        module_id: grpc.aio.insecure_channel(address)
        for module_id, address in sorted(secrets.addresses.items())
    }
    try:
        yield [
            ModuleClient(
                module_id,
                secrets.secrets[module_id],
                payment_module_pb2_grpc.PaymentModuleServiceStub(channel),
                clock,
            )
            for module_id, channel in channels.items()
        ]
    finally:
        for channel in channels.values():
            await channel.close(None)


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000
