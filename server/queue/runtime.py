"""The queue's in-process runtime: admission state in memory, fed by LISTEN/NOTIFY.

One per server process. It holds the latest queue_state (so the gate and the
status answers never read the database for it), fans every change out to all
open watch streams through one shared future (work per change, not per
watcher), keeps open watch streams' tokens alive with one batched UPDATE, and
remembers tokens completed by payments so the gate refuses them at once.

Sources of state, newest version wins:
- NOTIFY payloads on a dedicated connection: every process learns every change;
- apply() right after this process commits a change (no wait for the echo);
- a re-read every SAFETY_REREAD_SECONDS, in case a notification was lost
  (e.g. while the listening connection was being re-established).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.config import Settings
from server.errors import Unavailable
from server.queue import store
from server.queue.admission import AdmissionRate, AdmissionState

log = logging.getLogger(__name__)

SAFETY_REREAD_SECONDS = 5.0
_RECONNECT_SECONDS = 1.0


class ChangeFeed:
    """Wakes every waiter once per change: one shared future, replaced on publish."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def publish(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)
        self._next = None

    async def wait(self, at_most_seconds: float) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._next), at_most_seconds)


class QueueRuntime:
    def __init__(self, settings: Settings, pool: AsyncConnectionPool, clock: Clock) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self._state: AdmissionState | None = None
        self.rate = AdmissionRate()
        self.changes = ChangeFeed()
        # Completed (paid) tokens -> their expiry: refused by the gate until then.
        self._completed: dict[uuid.UUID, datetime] = {}
        # Open watch streams: token id -> number of streams, and the expiry the
        # last presence update gave it.
        self._watchers: dict[uuid.UUID, int] = {}
        self._watch_expiry: dict[uuid.UUID, datetime] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        # Counters for tests and logs.
        self.state_reads = 0
        self.notifications = 0
        self.changes_applied = 0

    @property
    def token_ttl(self) -> timedelta:
        return timedelta(seconds=self._settings.token_ttl_seconds)

    @property
    def state(self) -> AdmissionState:
        if self._state is None:
            raise Unavailable(
                "QUEUE_STARTING", "the queue is starting; retry shortly", retry_after_seconds=1.0
            )
        return self._state

    # -- state -----------------------------------------------------------------

    def apply(
        self,
        state: AdmissionState,
        completed_tokens: Iterable[tuple[uuid.UUID, datetime]] = (),
    ) -> bool:
        """Adopt a state if it is newer than the one held; True if it was."""
        now = self._clock.now()
        for token_id, expires_at in completed_tokens:
            if expires_at > now:
                self._completed[token_id] = expires_at
        if self._state is not None and state.version <= self._state.version:
            return False
        self._state = state
        self.rate.observe(now, state.window_limit)
        self.changes_applied += 1
        self.changes.publish()
        return True

    def is_completed(self, token_id: uuid.UUID) -> bool:
        return token_id in self._completed

    async def refresh(self) -> AdmissionState:
        """Read queue_state now and adopt it (the safety net; tests use it to settle)."""
        async with self._pool.connection() as conn:
            state = await store.read_queue_state(conn)
        self.state_reads += 1
        self.apply(state)
        return self.state

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        async with self._pool.connection() as conn:
            await store.ensure_queue_state(
                conn, self._settings.admission_capacity, self._clock.now()
            )
        self._tasks = [
            asyncio.create_task(self._listen(), name="queue-listen"),
            asyncio.create_task(self._keep_watchers_present(), name="queue-presence"),
        ]
        await self.refresh()
        # Wait (briefly) until LISTEN is in place, so no change after start is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10.0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.changes.publish()

    async def _listen(self) -> None:
        while True:
            try:
                conninfo = self._pool.conninfo
                assert isinstance(conninfo, str), "the queue listener needs a static conninfo"
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {store.CHANNEL}")
                    self._listening.set()
                    await self._reread(conn)  # changes made before LISTEN took effect
                    while True:
                        async for notice in conn.notifies(timeout=SAFETY_REREAD_SECONDS):
                            self.notifications += 1
                            state, tokens = store.decode_change(notice.payload)
                            self.apply(state, tokens)
                        await self._reread(conn)
                        self._forget_ended()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("queue listener lost its connection; reconnecting", exc_info=True)
                await asyncio.sleep(_RECONNECT_SECONDS)

    async def _reread(self, conn: psycopg.AsyncConnection) -> None:
        state = await store.read_queue_state(conn)
        self.state_reads += 1
        self.apply(state)

    def _forget_ended(self) -> None:
        now = self._clock.now()
        for token_id in [t for t, e in self._completed.items() if e <= now]:
            del self._completed[token_id]

    # -- presence of watch streams ---------------------------------------------

    def watch(self, token_id: uuid.UUID, expires_at: datetime) -> None:
        self._watchers[token_id] = self._watchers.get(token_id, 0) + 1
        known = self._watch_expiry.get(token_id)
        self._watch_expiry[token_id] = max(expires_at, known) if known else expires_at

    def unwatch(self, token_id: uuid.UUID) -> None:
        count = self._watchers.get(token_id, 0) - 1
        if count > 0:
            self._watchers[token_id] = count
        else:
            self._watchers.pop(token_id, None)
            self._watch_expiry.pop(token_id, None)

    def watched_expiry(self, token_id: uuid.UUID) -> datetime | None:
        return self._watch_expiry.get(token_id)

    @property
    def watcher_count(self) -> int:
        return sum(self._watchers.values())

    async def touch_watchers(self) -> int:
        """Extend every watched waiting token in one statement; how many were extended."""
        ids = list(self._watchers)
        if not ids:
            return 0
        async with self._pool.connection() as conn:
            extended = await store.touch_waiting_tokens(
                conn, ids, self._clock.now(), self.token_ttl
            )
        for token_id, expires_at in extended.items():
            if token_id in self._watch_expiry:
                self._watch_expiry[token_id] = expires_at
        return len(extended)

    async def _keep_watchers_present(self) -> None:
        # A third of the lifetime: two touches may fail before a token lapses.
        interval = max(self._settings.token_ttl_seconds / 3, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.touch_watchers()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not keep watched queue tokens alive", exc_info=True)
