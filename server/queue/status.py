"""A fan's QueueStatus, from their token row and the admission state in memory."""

from __future__ import annotations

from datetime import datetime

from concert.v1 import queue_pb2
from server.queue.admission import AdmissionRate, AdmissionState
from server.queue.store import TokenRow
from server.queue.tokens import QueueToken

_STATES = {
    "completed": queue_pb2.QUEUE_TOKEN_STATE_COMPLETED,
    "expired": queue_pb2.QUEUE_TOKEN_STATE_EXPIRED,
}


def queue_status(
    token: TokenRow,
    admission: AdmissionState,
    rate: AdmissionRate,
    now: datetime,
    people_ahead: int,
) -> queue_pb2.QueueStatus:
    """people_ahead: the live fans waiting ahead of the token (QueueRuntime.people_ahead)."""
    status = queue_pb2.QueueStatus(
        queue_number=token.queue_number, admission_paused=admission.paused
    )
    status.expire_time.FromDatetime(token.expires_at)
    if token.state != "live":
        status.state = _STATES[token.state]
        return status
    if admission.is_admitted(token.queue_number):
        status.state = queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
        return status
    status.state = queue_pb2.QUEUE_TOKEN_STATE_WAITING
    status.people_ahead = people_ahead
    if not admission.paused:
        wait = rate.estimated_wait(now, status.people_ahead)
        if wait is not None:
            status.estimated_wait.FromTimedelta(wait)
    return status


def claims_of(token: TokenRow) -> QueueToken:
    """What the re-signed token says: the row's current expiry."""
    return QueueToken(token.token_id, token.user_id, token.queue_number, token.expires_at)
