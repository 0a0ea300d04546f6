"""Use cases that show a token to the queue: status, refresh, watch, re-issue.

Each reads the token's row (authoritative, unlike the signed expiry) and, when
the token is live, extends it (presence): a waiting fan stays in line while
present; an admitted fan's expiry stops at admitted_at + token lifetime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from concert.v1 import queue_pb2
from server.clock import Clock
from server.errors import ErrorReason, ResourceExhausted
from server.fan import token_completed, token_expired, token_invalid
from server.queue import store
from server.queue.admission import AdmissionState
from server.queue.runtime import WATCH_RECHECK_SECONDS, QueueRuntime
from server.queue.status import claims_of, queue_status
from server.queue.store import TokenRow
from server.queue.tokens import QueueToken, read_queue_token, sign_queue_token
from server.signing import Signer

# An open watch stream sends a new position at most once per watch_interval:
# every WATCH_MIN_INTERVAL_SECONDS near the front, one second more per
# WATCH_PLACES_PER_SECOND places ahead, up to WATCH_MAX_INTERVAL_SECONDS. A fan
# 8,000 places back learns nothing from a message a second, and 8,000 such
# streams cost the server a core's worth of wake-ups and writes in a sale.
WATCH_MIN_INTERVAL_SECONDS = 1.0
WATCH_MAX_INTERVAL_SECONDS = 5.0
WATCH_PLACES_PER_SECOND = 1000
# A waiting stream sends its status at least every WATCH_SILENCE_LIMIT_SECONDS,
# changed or not: a proxy with an idle timeout keeps it, and the client sees it
# is alive. Streams wake at the runtime's periodic recheck, so the heartbeat is
# due one recheck earlier than the limit.
WATCH_SILENCE_LIMIT_SECONDS = 30.0
WATCH_HEARTBEAT_SECONDS = WATCH_SILENCE_LIMIT_SECONDS - WATCH_RECHECK_SECONDS
# Open WatchQueueStatus streams per token, per process: a third is refused.
MAX_STREAMS_PER_TOKEN = 2


def watch_interval(people_ahead: int) -> float:
    """Seconds a watch stream waits after sending before it sends a new position."""
    steps = people_ahead // WATCH_PLACES_PER_SECOND
    return min(WATCH_MAX_INTERVAL_SECONDS, WATCH_MIN_INTERVAL_SECONDS + steps)


# GetQueueStatus extends a token only when that moves its expiry by at least
# this share of the lifetime: a waiting fan polling more often than every
# 0.9 x lifetime stays in line, and most polls are reads.
LAZY_TOUCH_FRACTION = 0.1


@dataclass(frozen=True)
class Presented:
    token: TokenRow
    credential: str  # re-signed with the row's expiry
    status: queue_pb2.QueueStatus


def parse_token(signer: Signer, credential: str | None) -> QueueToken:
    claims = read_queue_token(signer, credential)
    if claims is None:
        raise token_invalid()
    return claims


class QueuePresence:
    def __init__(
        self, pool: AsyncConnectionPool, clock: Clock, signer: Signer, runtime: QueueRuntime
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._signer = signer
        self._runtime = runtime

    def present(self, token: TokenRow) -> Presented:
        runtime = self._runtime
        status = self._status(token, runtime.state)
        return Presented(token, sign_queue_token(self._signer, claims_of(token)), status)

    def _status(self, token: TokenRow, state: AdmissionState) -> queue_pb2.QueueStatus:
        runtime = self._runtime
        ahead = runtime.people_ahead(token.queue_number)
        return queue_status(token, state, runtime.rate, self._clock.now(), ahead)

    async def touch(self, token: QueueToken | TokenRow, *, lazily: bool = False) -> TokenRow | None:
        """Extend a live token; the row as it stands, or None when there is no such
        token or it is not the user's and number's the claims name.

        lazily: leave the row alone when its expiry would move by less than a
        tenth of the lifetime (a status poll), so polling costs a read, not a write.
        """
        now = self._clock.now()
        runtime = self._runtime
        admitted = runtime.state.is_admitted(token.queue_number)
        min_move = runtime.token_ttl * LAZY_TOUCH_FRACTION if lazily else timedelta(0)
        owner = (token.user_id, token.queue_number)
        async with self._pool.connection() as conn:
            return await store.touch_token(
                conn, token.token_id, owner, now, runtime.token_ttl, admitted, min_move=min_move
            )

    async def status(self, credential: str | None) -> Presented:
        """GetQueueStatus: a completed token reports COMPLETED; an expired one is refused.

        Most polls are answered from memory, like the gate: the token's own
        signed expiry, the completions heard by LISTEN/NOTIFY and the admission
        window. The row is read (and extended) only when the poll would move
        the expiry by LAZY_TOUCH_FRACTION of the lifetime, or the token is
        completed or expired, which the row must tell.
        """
        claims = parse_token(self._signer, credential)
        if self._fresh_in_memory(claims):
            remembered = TokenRow(
                claims.token_id,
                claims.user_id,
                claims.queue_number,
                "live",
                claims.expire_time,
                None,
            )
            status = self._status(remembered, self._runtime.state)
            return Presented(remembered, str(credential), status)
        row = await self.touch(claims, lazily=True)
        return self.present(self._usable(row, completed_ok=True))

    def _fresh_in_memory(self, claims: QueueToken) -> bool:
        """True when a lazy touch would leave the row alone and memory knows the rest.

        The row's expiry is never earlier than the newest signed one (every
        extension re-signs), so a signed expiry in the future means the expiry
        job has not ended the token; a payment that ended it is in the
        runtime's completed set.
        """
        runtime = self._runtime
        horizon = self._clock.now() + runtime.token_ttl * (1 - LAZY_TOUCH_FRACTION)
        return claims.expire_time > horizon and not runtime.is_completed(claims.token_id)

    async def refresh(self, credential: str | None) -> Presented:
        claims = parse_token(self._signer, credential)
        row = await self.touch(claims)
        return self.present(self._usable(row, completed_ok=False))

    async def watch(self, credential: str | None) -> AsyncIterator[Presented]:
        """One status now, then the latest position when it changes; ends when admitted or done.

        Coalesced: after sending, a stream waits out its watch_interval (1 s
        near the front, up to 5 s far back), then sends the latest position if
        it changed, or waits for the next change (the runtime's shared pulse,
        at most once a second); positions passed in between are skipped, never
        reordered. Admission wakes the stream at once and its message is sent
        at once, as is the end of an expired token.
        """
        claims = parse_token(self._signer, credential)
        # A stream's place is taken before its first await, so concurrent opens
        # cannot all pass the check; the newest beyond the limit is refused.
        if not self._runtime.open_stream(claims.token_id, MAX_STREAMS_PER_TOKEN):
            raise ResourceExhausted(
                ErrorReason.ERROR_REASON_TOO_MANY_STREAMS,
                f"at most {MAX_STREAMS_PER_TOKEN} open WatchQueueStatus streams per token;"
                " close one first",
                metadata={"max_streams": str(MAX_STREAMS_PER_TOKEN)},
            )
        try:
            async for presented in self._watch(claims):
                yield presented
        finally:
            self._runtime.close_stream(claims.token_id)

    async def _watch(self, claims: QueueToken) -> AsyncIterator[Presented]:
        runtime = self._runtime
        # Lazily, like a status poll: opening a stream writes the row only when
        # that moves its expiry by a tenth of the lifetime.
        touched = await self.touch(claims, lazily=True)
        row = self._usable(touched, True)
        first = self.present(row)
        yield first
        if first.status.state != queue_pb2.QUEUE_TOKEN_STATE_WAITING:
            return
        loop = asyncio.get_running_loop()
        runtime.watch(row.token_id, row.expires_at)
        try:
            seen = (first.status.people_ahead, first.status.admission_paused)
            signed, signed_expiry = first.credential, row.expires_at
            next_send = loop.time() + watch_interval(first.status.people_ahead)
            last_sent = loop.time()
            while True:
                waiting_out = loop.time() < next_send
                await runtime.wakeups.wait(
                    row.queue_number, not_before=next_send if waiting_out else None
                )
                expiry = runtime.watched_expiry(row.token_id)
                if expiry is None or expiry <= self._clock.now():
                    raise token_expired()
                if runtime.is_completed(row.token_id):
                    return
                state = runtime.state
                if state.is_admitted(row.queue_number):
                    # The one database call of this stream after its start:
                    # record admission and bound the active window.
                    admitted = self._usable(await self.touch(row), True)
                    yield self.present(admitted)
                    return
                position = (runtime.people_ahead(row.queue_number), state.paused)
                heartbeat = loop.time() - last_sent >= WATCH_HEARTBEAT_SECONDS
                if (position == seen and not heartbeat) or loop.time() < next_send:
                    continue
                seen = position
                sent_at = runtime.wakeups.pulsed_at or loop.time()  # the pulse that woke it
                next_send = sent_at + watch_interval(position[0])
                row = TokenRow(row.token_id, row.user_id, row.queue_number, row.state, expiry, None)
                if expiry != signed_expiry:  # re-sign only when the expiry moved
                    signed = sign_queue_token(self._signer, claims_of(row))
                    signed_expiry = expiry
                last_sent = loop.time()
                yield Presented(row, signed, self._status(row, state))
        finally:
            runtime.unwatch(row.token_id)

    def _usable(self, row: TokenRow | None, completed_ok: bool) -> TokenRow:
        if row is None:
            raise token_invalid()
        if row.state == "completed":
            if completed_ok:
                return row
            raise token_completed()
        if not row.is_live(self._clock.now()):
            raise token_expired()
        return row
