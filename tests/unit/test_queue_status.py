"""What a fan is told about their place, from memory: status, the gate, the stored-token check.

- queue_status (server/queue/status.py): the state a token reports, people
  ahead and the estimated wait (none while paused);
- admit (server/queue/gate.py): the per-call check of a queue token with no
  database read, and the RetryInfo a waiting fan gets (estimated wait clamped
  to 1..60 s, 5 s when unknown or paused);
- insist_live (server/queue/completion.py): the stored token must be live
  and say what the signed claims say;
- QueuePresence.status and .watch (server/queue/presence.py), as far as they
  go without the database: a fresh token is answered from memory, anything
  else needs the row; a third stream per token is refused before any read.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concert.v1 import queue_pb2
from concert.v1.error_reason_pb2 import ErrorReason
from server.clock import FakeClock
from server.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from server.fan import Fan
from server.queue.admission import AdmissionRate
from server.queue.completion import insist_live
from server.queue.gate import DEFAULT_RETRY_SECONDS, MAX_RETRY_SECONDS, admit
from server.queue.presence import (
    LAZY_TOUCH_FRACTION,
    MAX_STREAMS_PER_TOKEN,
    QueuePresence,
)
from server.queue.runtime import QueueRuntime
from server.queue.status import claims_of, queue_status
from server.queue.store import TokenRow
from server.queue.tokens import QueueToken, sign_queue_token
from server.signing import Signer
from tests.unit.helpers import KEY_A, KEY_B, NOW, DatabaseTouched, no_database, runtime, state

USER = uuid.UUID("00000000-0000-4000-8000-000000000001")
TOKEN = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY_A)


def row(
    queue_number: int, state_: str = "live", expires_at: datetime = NOW + timedelta(minutes=10)
) -> TokenRow:
    return TokenRow(TOKEN, USER, queue_number, state_, expires_at, None)


def rate_of(per_second: int) -> AdmissionRate:
    """A rate of `per_second` fans a second, observed over the 10 s before NOW."""
    rate = AdmissionRate()
    rate.observe(NOW - timedelta(seconds=10), 0)
    rate.observe(NOW, 10 * per_second)
    return rate


# -- queue_status ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("completed", queue_pb2.QUEUE_TOKEN_STATE_COMPLETED),
        ("expired", queue_pb2.QUEUE_TOKEN_STATE_EXPIRED),
    ],
)
def test_an_ended_token_reports_how_it_ended_and_no_position(
    stored: str, expected: queue_pb2.QueueTokenState
) -> None:
    status = queue_status(row(50, stored), state(10), rate_of(2), NOW, people_ahead=39)
    assert status.state == expected
    assert status.people_ahead == 0
    assert not status.HasField("estimated_wait")
    assert status.queue_number == 50


def test_an_admitted_token_reports_admitted_and_nobody_ahead() -> None:
    status = queue_status(row(10), state(10), rate_of(2), NOW, people_ahead=7)
    assert status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED
    assert status.people_ahead == 0
    assert not status.HasField("estimated_wait")


def test_a_waiting_token_reports_people_ahead_and_the_wait_at_the_observed_rate() -> None:
    expires = NOW + timedelta(minutes=7)
    status = queue_status(row(50, expires_at=expires), state(10), rate_of(2), NOW, 30)
    assert status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
    assert status.people_ahead == 30
    assert status.estimated_wait.ToTimedelta() == timedelta(seconds=15)
    assert status.expire_time.ToDatetime() == expires.replace(tzinfo=None)
    assert not status.admission_paused


def test_a_waiting_token_has_no_estimated_wait_before_a_rate_is_known() -> None:
    status = queue_status(row(50), state(10), AdmissionRate(), NOW, people_ahead=30)
    assert status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
    assert not status.HasField("estimated_wait")


def test_while_paused_a_waiting_token_has_no_estimated_wait() -> None:
    status = queue_status(row(50), state(10, paused=True), rate_of(2), NOW, people_ahead=30)
    assert status.admission_paused
    assert status.people_ahead == 30
    assert not status.HasField("estimated_wait")


def test_the_re_signed_claims_carry_the_rows_current_expiry() -> None:
    expires = NOW + timedelta(minutes=3)
    assert claims_of(row(50, expires_at=expires)) == QueueToken(TOKEN, USER, 50, expires)


# -- the gate -------------------------------------------------------------------


def credential(signer: Signer, queue_number: int, expires: datetime | None = None) -> str:
    claims = QueueToken(TOKEN, USER, queue_number, expires or NOW + timedelta(minutes=10))
    return sign_queue_token(signer, claims)


def test_an_admitted_token_lets_the_fan_in(signer: Signer, clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10)
    fan = admit(signer, clock, queue, credential(signer, 10))
    assert fan == Fan(USER, TOKEN, 10)


@pytest.mark.parametrize("shown", [None, "", "garbage", "1.AAAA.AAAA"])
def test_a_missing_or_malformed_token_is_invalid(
    signer: Signer, clock: FakeClock, shown: str | None
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        admit(signer, clock, runtime(clock, window_limit=10), shown)
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOKEN_INVALID


def test_a_token_signed_with_a_key_we_do_not_have_is_invalid(
    signer: Signer, clock: FakeClock
) -> None:
    forged = credential(Signer(KEY_B), 1)
    with pytest.raises(Unauthenticated) as caught:
        admit(signer, clock, runtime(clock, window_limit=10), forged)
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOKEN_INVALID


def test_a_token_is_expired_from_its_signed_expiry_on(signer: Signer, clock: FakeClock) -> None:
    queue = runtime(clock, window_limit=10)
    admit(signer, clock, queue, credential(signer, 1, NOW + timedelta(microseconds=1)))
    with pytest.raises(Unauthenticated) as caught:
        admit(signer, clock, queue, credential(signer, 1, NOW))
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOKEN_EXPIRED


def test_a_completed_token_is_refused_except_by_the_methods_that_allow_it(
    signer: Signer, clock: FakeClock
) -> None:
    queue = runtime(clock, window_limit=10)
    queue.completed_here(TOKEN, NOW + timedelta(minutes=10))
    with pytest.raises(FailedPrecondition) as caught:
        admit(signer, clock, queue, credential(signer, 5))
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOKEN_COMPLETED
    assert admit(signer, clock, queue, credential(signer, 5), allow_completed=True) == Fan(
        USER, TOKEN, 5
    )


def _refusal(signer: Signer, clock: FakeClock, queue: QueueRuntime, number: int) -> dict[str, str]:
    with pytest.raises(FailedPrecondition) as caught:
        admit(signer, clock, queue, credential(signer, number))
    error = caught.value
    assert error.reason == ErrorReason.ERROR_REASON_QUEUE_NOT_ADMITTED
    return {**error.metadata, "retry": str(error.retry_after_seconds)}


def _queue_at_rate(clock: FakeClock, per_second: int, *, paused: bool = False) -> QueueRuntime:
    queue = runtime(clock, window_limit=10, admitted_total=0, version=1)
    clock.advance(10)
    queue.apply(state(10, admitted_total=10 * per_second, version=2, paused=paused))
    return queue


def test_a_waiting_fan_is_told_their_place_and_to_retry_after_the_estimated_wait(
    signer: Signer, clock: FakeClock
) -> None:
    queue = _queue_at_rate(clock, 2)
    # Nobody read the line yet: numbers 11..110 count as live, 100 ahead, 50 s at 2/s.
    assert _refusal(signer, clock, queue, 111) == {
        "queue_number": "111",
        "people_ahead": "100",
        "retry": "50.0",
    }


@pytest.mark.parametrize(
    ("number", "retry"),
    [
        (12, 1.0),  # 1 ahead at 2/s: half a second, raised to 1 s
        (11, DEFAULT_RETRY_SECONDS),  # nobody ahead: no estimate
        (10_011, MAX_RETRY_SECONDS),  # 10,000 ahead: 5,000 s, lowered to 60 s
    ],
)
def test_the_retry_delay_is_the_estimated_wait_kept_within_1_to_60_seconds(
    signer: Signer, clock: FakeClock, number: int, retry: float
) -> None:
    queue = _queue_at_rate(clock, 2)
    assert _refusal(signer, clock, queue, number)["retry"] == str(retry)


def test_with_no_rate_known_or_while_paused_the_retry_delay_is_the_default(
    signer: Signer, clock: FakeClock
) -> None:
    assert _refusal(signer, clock, runtime(clock, window_limit=10), 111)["retry"] == "5.0"
    paused = _queue_at_rate(clock, 2, paused=True)
    assert _refusal(signer, clock, paused, 111)["retry"] == "5.0"


@given(per_second=st.integers(1, 10_000), ahead=st.integers(1, 10**7))
def test_the_retry_delay_is_always_between_1_and_60_seconds(per_second: int, ahead: int) -> None:
    clock = FakeClock(NOW)
    signer = Signer(KEY_A)
    queue = _queue_at_rate(clock, per_second)
    with pytest.raises(FailedPrecondition) as caught:
        admit(signer, clock, queue, credential(signer, 10 + ahead + 1))
    retry = caught.value.retry_after_seconds
    assert retry is not None
    assert 1.0 <= retry <= 60.0
    assert retry == pytest.approx(min(max(ahead / per_second, 1.0), 60.0))


# -- the stored token against the claims -------------------------------------------


def test_a_live_stored_token_that_matches_the_claims_passes() -> None:
    insist_live(row(5), NOW, Fan(USER, TOKEN, 5))
    insist_live(row(5), NOW)  # no caller to compare with


@pytest.mark.parametrize(
    ("stored", "fan"),
    [
        (None, Fan(USER, TOKEN, 5)),
        (row(5), Fan(uuid.uuid4(), TOKEN, 5)),  # someone else's token id
        (row(5), Fan(USER, TOKEN, 6)),  # another number
    ],
)
def test_a_missing_stored_token_or_one_that_contradicts_the_claims_is_invalid(
    stored: TokenRow | None, fan: Fan
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        insist_live(stored, NOW, fan)
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOKEN_INVALID


def test_a_stored_token_that_ended_is_completed_or_expired() -> None:
    with pytest.raises(FailedPrecondition) as completed:
        insist_live(row(5, "completed"), NOW)
    assert completed.value.reason == ErrorReason.ERROR_REASON_TOKEN_COMPLETED
    with pytest.raises(Unauthenticated) as expired:
        insist_live(row(5, "expired", NOW + timedelta(minutes=1)), NOW)
    assert expired.value.reason == ErrorReason.ERROR_REASON_TOKEN_EXPIRED
    with pytest.raises(Unauthenticated) as lapsed:
        insist_live(row(5, "live", NOW), NOW)  # live in the row, but its expiry is now
    assert lapsed.value.reason == ErrorReason.ERROR_REASON_TOKEN_EXPIRED


# -- QueuePresence: what needs no row ----------------------------------------------


def _presence(signer: Signer, clock: FakeClock) -> tuple[QueuePresence, QueueRuntime]:
    queue = runtime(clock, window_limit=10)
    return QueuePresence(no_database(), clock, signer, queue), queue


async def test_a_status_poll_of_a_freshly_signed_token_is_answered_from_memory(
    signer: Signer, clock: FakeClock
) -> None:
    presence, queue = _presence(signer, clock)
    horizon = NOW + queue.token_ttl * (1 - LAZY_TOUCH_FRACTION)
    shown = credential(signer, 15, horizon + timedelta(microseconds=1))
    presented = await presence.status(shown)
    assert presented.credential == shown  # not re-signed: nothing changed
    assert presented.status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING
    assert presented.status.people_ahead == 4
    assert presented.token.expires_at == horizon + timedelta(microseconds=1)


async def test_a_status_poll_that_would_move_the_expiry_enough_reads_the_row(
    signer: Signer, clock: FakeClock
) -> None:
    presence, queue = _presence(signer, clock)
    horizon = NOW + queue.token_ttl * (1 - LAZY_TOUCH_FRACTION)
    with pytest.raises(DatabaseTouched):
        await presence.status(credential(signer, 15, horizon))


async def test_a_status_poll_of_a_completed_token_reads_the_row(
    signer: Signer, clock: FakeClock
) -> None:
    presence, queue = _presence(signer, clock)
    queue.completed_here(TOKEN, NOW + timedelta(minutes=10))
    with pytest.raises(DatabaseTouched):
        await presence.status(credential(signer, 15, NOW + timedelta(minutes=10)))


async def test_a_status_poll_with_a_bad_token_is_refused_before_any_read(
    signer: Signer, clock: FakeClock
) -> None:
    presence, _ = _presence(signer, clock)
    with pytest.raises(Unauthenticated) as caught:
        await presence.status(credential(Signer(KEY_B), 15))
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOKEN_INVALID


async def test_a_stream_beyond_the_per_token_limit_is_refused_and_frees_no_place(
    signer: Signer, clock: FakeClock
) -> None:
    presence, queue = _presence(signer, clock)
    for _ in range(MAX_STREAMS_PER_TOKEN):
        assert queue.open_stream(TOKEN, MAX_STREAMS_PER_TOKEN)
    stream = presence.watch(credential(signer, 15))
    with pytest.raises(ResourceExhausted) as caught:
        await anext(stream)
    assert caught.value.reason == ErrorReason.ERROR_REASON_TOO_MANY_STREAMS
    assert caught.value.metadata == {"max_streams": str(MAX_STREAMS_PER_TOKEN)}
    assert queue.stream_count(TOKEN) == MAX_STREAMS_PER_TOKEN


async def test_a_stream_gives_its_place_back_however_it_ends(
    signer: Signer, clock: FakeClock
) -> None:
    presence, queue = _presence(signer, clock)
    stream = presence.watch(credential(signer, 15))
    with pytest.raises(DatabaseTouched):  # its first status reads the row
        await anext(stream)
    assert queue.stream_count(TOKEN) == 0


async def test_a_stream_with_a_bad_token_takes_no_place(signer: Signer, clock: FakeClock) -> None:
    presence, queue = _presence(signer, clock)
    with pytest.raises(Unauthenticated):
        await anext(presence.watch("not-a-token"))
    assert queue.stream_count(TOKEN) == 0
