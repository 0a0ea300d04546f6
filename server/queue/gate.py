"""The queue gate: ConcertService, ReservationService and PaymentService need an admitted token.

Per call, with no database round trip: the token's HMAC and signed expiry,
then the admission window held in memory by the QueueRuntime (kept current by
LISTEN/NOTIFY). On success the call runs with server.fan.fan_context bound to
the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from server.clock import Clock
from server.credentials import bearer_credential
from server.errors import ErrorReason, FailedPrecondition
from server.fan import Fan, fan_context, token_completed, token_expired, token_invalid
from server.interceptors import Call, Layer, MethodInfo, StreamProceed, UnaryProceed
from server.queue.runtime import QueueRuntime
from server.queue.tokens import read_queue_token
from server.signing import Signer

GATED_SERVICES = frozenset(
    {
        "concert.v1.ConcertService",
        "concert.v1.ReservationService",
        "concert.v1.PaymentService",
    }
)

# Methods a used-up (completed) token may still call: reading one's own
# reservation and payments, and retrying a Pay, whose use case replays the first
# answer for its request_id (AIP-155) and refuses anything new with
# TOKEN_COMPLETED itself. Without this, a fan whose Pay reply was lost could
# never learn the result with the token that paid.
AFTER_COMPLETION_METHODS = frozenset(
    {
        "/concert.v1.PaymentService/Pay",
        "/concert.v1.PaymentService/GetPayment",
        "/concert.v1.PaymentService/GetModulePayment",
        "/concert.v1.ReservationService/GetReservation",
    }
)

# RetryInfo for a waiting fan when no admission rate has been observed yet.
DEFAULT_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 60.0


def admit(
    signer: Signer,
    clock: Clock,
    runtime: QueueRuntime,
    credential: str | None,
    *,
    allow_completed: bool = False,
) -> Fan:
    """The fan behind an admitted token, or the error the caller must see."""
    claims = read_queue_token(signer, credential)
    if claims is None:
        raise token_invalid()
    now = clock.now()
    if claims.expire_time <= now:
        raise token_expired()
    if not allow_completed and runtime.is_completed(claims.token_id):
        raise token_completed()
    state = runtime.state
    if not state.is_admitted(claims.queue_number):
        people_ahead = runtime.people_ahead(claims.queue_number)
        wait = None if state.paused else runtime.rate.estimated_wait(now, people_ahead)
        retry = DEFAULT_RETRY_SECONDS if wait is None else wait.total_seconds()
        raise FailedPrecondition(
            ErrorReason.ERROR_REASON_QUEUE_NOT_ADMITTED,
            "not your turn yet: wait for admission (QueueService.WatchQueueStatus)",
            metadata={
                "queue_number": str(claims.queue_number),
                "people_ahead": str(people_ahead),
            },
            retry_after_seconds=min(max(retry, 1.0), MAX_RETRY_SECONDS),
        )
    return Fan(claims.user_id, claims.token_id, claims.queue_number)


class QueueGateLayer(Layer):
    def __init__(self, signer: Signer, clock: Clock, runtime: QueueRuntime) -> None:
        self._signer = signer
        self._clock = clock
        self._runtime = runtime

    def applies_to(self, info: MethodInfo) -> bool:
        return info.service in GATED_SERVICES

    def _admit(self, call: Call) -> Fan:
        return admit(
            self._signer,
            self._clock,
            self._runtime,
            bearer_credential(call.metadata()),
            allow_completed=call.info.method in AFTER_COMPLETION_METHODS,
        )

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        bound = fan_context.set(self._admit(call))
        try:
            return await proceed(call)
        finally:
            fan_context.reset(bound)

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        bound = fan_context.set(self._admit(call))
        try:
            async for item in proceed(call):
                yield item
        finally:
            fan_context.reset(bound)
