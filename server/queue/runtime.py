"""The queue's in-process runtime: admission state in memory, fed by LISTEN/NOTIFY.

One per server process. It holds the latest queue_state (so the gate and the
status answers never read the database for it), wakes open watch streams
at most once a second after changes (and a fan the change admits at once: see
WatcherWakeups), keeps open watch streams' tokens alive with one batched UPDATE, and
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
import heapq
import itertools
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
# Waiting watch streams wake together at most this often after a change...
PULSE_SECONDS = 1.0
# ...and at least this often, to notice an expired token with no change.
WATCH_RECHECK_SECONDS = 5.0
_RECONNECT_SECONDS = 1.0


class WatcherWakeups:
    """When waiting watch streams wake up: at a shared pulse, or at once on admission.

    Every change of the queue moves every waiting fan's position, and during a
    sale changes come hundreds of times a second: waking thousands of watchers
    per change is what overloaded the server. Instead a watcher waits on its own
    future (no timer), which is resolved either by the next pulse, at most once
    per PULSE_SECONDS for all watchers together, or at once by the change that
    admits its queue number (a heap by number, so a change touches only the
    watchers it admits).
    """

    def __init__(self) -> None:
        self._until_pulse: list[asyncio.Future[None]] = []
        self._by_number: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.pending_send = False  # some watcher holds a change it could not send yet

    def wait(self, queue_number: int, *, pending_send: bool = False) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._until_pulse.append(waiter)
        heapq.heappush(self._by_number, (queue_number, next(self._order), waiter))
        self.pending_send = self.pending_send or pending_send
        return waiter

    @property
    def waiting(self) -> bool:
        return bool(self._until_pulse)

    def pulse(self) -> None:
        """Wake every waiting watcher."""
        waiters, self._until_pulse, self._by_number = self._until_pulse, [], []
        self.pending_send = False
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def admit(self, window_limit: int) -> None:
        """Wake, now, the watchers whose queue number the window has reached."""
        by_number = self._by_number
        while by_number and by_number[0][0] <= window_limit:
            waiter = heapq.heappop(by_number)[2]
            if not waiter.done():
                waiter.set_result(None)


class QueueRuntime:
    def __init__(self, settings: Settings, pool: AsyncConnectionPool, clock: Clock) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self._state: AdmissionState | None = None
        self.rate = AdmissionRate()
        self.wakeups = WatcherWakeups()
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
        self.wakeups.admit(state.window_limit)
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
            asyncio.create_task(self._pulse_watchers(), name="queue-watch-pulse"),
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
        self.wakeups.pulse()

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

    async def _pulse_watchers(self) -> None:
        """The one timer of all watch streams: a pulse after changes, or a periodic recheck."""
        loop = asyncio.get_running_loop()
        pulsed_version: int | None = None
        pulsed_at = loop.time()
        while True:
            await asyncio.sleep(PULSE_SECONDS)
            wakeups = self.wakeups
            if not wakeups.waiting:
                continue
            version = self._state.version if self._state is not None else None
            now = loop.time()
            if (
                version != pulsed_version
                or wakeups.pending_send
                or now - pulsed_at >= WATCH_RECHECK_SECONDS
            ):
                pulsed_version, pulsed_at = version, now
                wakeups.pulse()

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
