"""The module's use cases: top up, read a balance, pay a reservation, read a
payment, refund one. Each validates its request whole first (one
INVALID_ARGUMENT naming every bad field), then runs its SQL (store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from paymentmodule.v1 import payment_module_pb2 as pb
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Violations
from server.payment_module import reasons, store
from server.payment_module.cards import TEST_CARDS, SandboxPolicy
from server.validation import decode_page_token, encode_page_token, parse_page_size, parse_uuid

ACCOUNT_ID = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
MAX_AMOUNT = 10_000_000_000
MAX_SESSION_TOKEN = 2048
REFUND_REQUESTED = "REFUND_REQUESTED"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ListPayments' window: from the epoch to the end of year 9999 (what a datetime holds).
_MIN_MICROS = 0
_MAX_MICROS = 253_402_300_799_999_999
_TOKEN_KEYS = frozenset({"start", "end", "at", "id"})

_STATES = {
    "succeeded": pb.MODULE_PAYMENT_STATE_SUCCEEDED,
    "declined": pb.MODULE_PAYMENT_STATE_DECLINED,
    "refunded": pb.MODULE_PAYMENT_STATE_REFUNDED,
}
_ANSWERS = {
    "not_reported": pb.SERVER_ANSWER_NOT_REPORTED,
    "pending": pb.SERVER_ANSWER_PENDING,
    "paid": pb.SERVER_ANSWER_PAID,
    "refund": pb.SERVER_ANSWER_REFUND,
}

Pool = AsyncConnectionPool[AsyncConnection[tuple]]


@dataclass
class ModulePayments:
    """The use cases over the module's database, with the sandbox's policy."""

    pool: Pool
    clock: Clock
    policy: SandboxPolicy
    rng: random.Random
    # Waits (the configured delays); tests may pass one that records them.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def top_up(self, request: pb.TopUpRequest) -> pb.TopUpResponse:
        violations = Violations()
        _account(violations, "account_id", request.account_id)
        if not 1 <= request.amount <= MAX_AMOUNT:
            violations.add("amount", f"must be from 1 to {MAX_AMOUNT}")
        request_id = parse_uuid(violations, "request_id", request.request_id)
        violations.raise_if_any()
        assert request_id is not None
        async with self.pool.connection() as conn:
            account, amount, balance = await store.top_up(
                conn, request_id, request.account_id, request.amount, self.clock.now()
            )
        if (account, amount) != (request.account_id, request.amount):
            raise _reused()
        return pb.TopUpResponse(balance=balance)

    async def get_balance(self, request: pb.GetBalanceRequest) -> pb.GetBalanceResponse:
        violations = Violations()
        _account(violations, "account_id", request.account_id)
        violations.raise_if_any()
        async with self.pool.connection() as conn:
            return pb.GetBalanceResponse(balance=await store.read_balance(conn, request.account_id))

    async def pay(self, request: pb.PayReservationRequest) -> pb.ModulePayment:
        """Take the money or decline; a success is queued for the callback."""
        violations = Violations()
        request_id = parse_uuid(violations, "request_id", request.request_id)
        reservation_id = parse_uuid(violations, "reservation_id", request.reservation_id)
        if not 1 <= request.amount <= MAX_AMOUNT:
            violations.add("amount", f"must be from 1 to {MAX_AMOUNT}")
        if not 1 <= len(request.session_token) <= MAX_SESSION_TOKEN:
            violations.add("session_token", f"required, at most {MAX_SESSION_TOKEN} characters")
        source = request.WhichOneof("source")
        card = None
        if source is None:
            violations.add("account_id", "one of account_id or card_number is required")
        elif source == "account_id":
            _account(violations, "account_id", request.account_id)
        elif request.card_number not in TEST_CARDS:
            violations.add(
                "card_number", "not a sandbox test card (the service's comment lists them)"
            )
        else:
            card = TEST_CARDS[request.card_number]
        violations.raise_if_any()
        assert request_id is not None and reservation_id is not None
        fingerprint = _fingerprint(request)
        async with self.pool.connection() as conn:
            if (found := await _replay(conn, request_id, fingerprint)) is not None:
                return found
        # A provider takes its time before it decides (the fan's call may time
        # out meanwhile; the retry with the same request_id finds the payment).
        if delay := self.policy.delay_for(card):
            await self.sleep(delay)
        payment = store.NewPayment(
            payment_id=uuid.uuid4(),
            request_id=request_id,
            fingerprint=fingerprint,
            reservation_id=reservation_id,
            amount=request.amount,
            session_token=request.session_token,
            account_id=request.account_id if source == "account_id" else None,
            card_last4=request.card_number[-4:] if source == "card_number" else None,
        )
        decline = self.policy.decline_reason(card, self.rng)
        async with self.pool.connection() as conn:
            row = await store.record_payment(conn, payment, decline, self.clock.now())
            if row is None:  # a duplicate of this request committed first
                found = await _replay(conn, request_id, fingerprint)
                assert found is not None
                return found
        return payment_message(row)

    async def get(self, request: pb.GetModulePaymentRequest) -> pb.ModulePayment:
        violations = Violations()
        payment_id = parse_uuid(violations, "payment_id", request.payment_id)
        violations.raise_if_any()
        assert payment_id is not None
        async with self.pool.connection() as conn:
            return payment_message(await _existing(conn, payment_id))

    async def refund(self, request: pb.RefundPaymentRequest) -> pb.ModulePayment:
        """The merchant's refund (already authenticated): idempotent."""
        violations = Violations()
        payment_id = parse_uuid(violations, "payment_id", request.payment_id)
        request_id = parse_uuid(violations, "request_id", request.request_id)
        violations.raise_if_any()
        assert payment_id is not None and request_id is not None
        async with self.pool.connection() as conn:
            await store.refund(conn, payment_id, REFUND_REQUESTED, self.clock.now(), request_id)
            row = await _existing(conn, payment_id)
        if row.state == "declined":
            raise FailedPrecondition(
                reasons.PAYMENT_DECLINED, "the payment was declined: nothing to refund"
            )
        if row.state != "refunded":  # the server answered PAID: the seat is sold
            raise FailedPrecondition(
                reasons.PAYMENT_KEPT_BY_SERVER,
                "the server recorded this payment and sold the seat; it cannot be refunded here",
            )
        return payment_message(row)

    async def list_payments(self, request: pb.ListPaymentsRequest) -> pb.ListPaymentsResponse:
        """A page of the book by creation time (already authenticated)."""
        violations = Violations()
        start, end = window_micros(request)
        for field, micros in (("start_time", start), ("end_time", end)):
            if micros is not None and not _MIN_MICROS <= micros <= _MAX_MICROS:
                violations.add(field, "must be from year 1970 to 9999")
        if start is not None and end is not None and end <= start:
            violations.add("end_time", "must be after start_time")
        page_size = parse_page_size(violations, request.page_size)
        position = decode_page_token(violations, request.page_token, _TOKEN_KEYS)
        after = None
        if position is not None:
            try:
                if (position["start"], position["end"]) != (start, end):
                    raise ValueError
                after = (_datetime(int(position["at"])), uuid.UUID(str(position["id"])))
            except (ValueError, TypeError, OverflowError):
                violations.add("page_token", "not a page token this method returned")
        violations.raise_if_any()
        async with self.pool.connection() as conn:
            rows = await store.list_payments(
                conn,
                None if start is None else _datetime(start),
                None if end is None else _datetime(end),
                after,
                page_size + 1,  # one more: is there a next page?
            )
        response = pb.ListPaymentsResponse(
            payments=[payment_message(row) for row in rows[:page_size]]
        )
        if len(rows) > page_size:
            last = rows[page_size - 1]
            response.next_page_token = encode_page_token(
                {
                    "start": start,
                    "end": end,
                    "at": _micros_of(last.created_at),
                    "id": str(last.payment_id),
                }
            )
        return response


def window_micros(request: pb.ListPaymentsRequest) -> tuple[int | None, int | None]:
    """ListPayments' window as Unix microseconds (None: unset), as it is signed."""
    return (
        _timestamp_micros(request.start_time) if request.HasField("start_time") else None,
        _timestamp_micros(request.end_time) if request.HasField("end_time") else None,
    )


def _timestamp_micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def _micros_of(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def payment_message(row: store.PaymentRow) -> pb.ModulePayment:
    message = pb.ModulePayment(
        payment_id=str(row.payment_id),
        reservation_id=str(row.reservation_id),
        amount=row.amount,
        state=_STATES[row.state],
        decline_reason=row.decline_reason or "",
        server_answer=_ANSWERS[row.server_answer],
        server_payment_id=row.server_payment_id or "",
        refund_reason=row.refund_reason or "",
        callback_attempts=row.callback_attempts,
        account_id=row.account_id or "",
        card_last4=row.card_last4 or "",
        create_time=_timestamp(row.created_at),
    )
    if row.answered_at is not None:
        message.answer_time.CopyFrom(_timestamp(row.answered_at))
    if row.refunded_at is not None:
        message.refund_time.CopyFrom(_timestamp(row.refunded_at))
    return message


def _timestamp(moment: object) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)  # type: ignore[arg-type]
    return stamp


def _account(violations: Violations, field: str, value: str) -> None:
    if not ACCOUNT_ID.fullmatch(value):
        violations.add(field, "1 to 128 of A-Z a-z 0-9 . _ @ + -")


def _fingerprint(request: pb.PayReservationRequest) -> bytes:
    """What a retry must repeat: every field but the request id."""
    copy = pb.PayReservationRequest()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


def _reused() -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request_id", "already used for a request with other fields")],
        reason=reasons.REQUEST_ID_REUSED,
    )


async def _replay(
    conn: AsyncConnection, request_id: uuid.UUID, fingerprint: bytes
) -> pb.ModulePayment | None:
    """The payment a request id made before (as it is now), if any."""
    found = await store.read_by_request(conn, request_id)
    if found is None:
        return None
    recorded, row = found
    if recorded != fingerprint:
        raise _reused()
    return payment_message(row)


async def _existing(conn: AsyncConnection, payment_id: uuid.UUID) -> store.PaymentRow:
    row = await store.read_payment(conn, payment_id)
    if row is None:
        raise NotFound(reasons.PAYMENT_NOT_FOUND, "no such payment")
    return row
