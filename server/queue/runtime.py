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

It also keeps a copy of the live line (the live waiting tokens' numbers, read
every LINE_READ_SECONDS on the same dedicated connection), so that
people_ahead counts live fans only, with no query per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.config import Settings
from server.errors import ErrorReason, Unavailable
from server.queue import store
from server.queue.admission import AdmissionRate, AdmissionState, LiveLine

log = logging.getLogger(__name__)

SAFETY_REREAD_SECONDS = 5.0
# How often each process re-reads the live line (people_ahead's source).
LINE_READ_SECONDS = 1.0
# Waiting watch streams wake together at most this often after a change
# (and a stream's own time, see WatcherWakeups, is checked this often)...
PULSE_SECONDS = 1.0
# ...and at least this often, to notice an expired token with no change.
WATCH_RECHECK_SECONDS = 5.0
_RECONNECT_SECONDS = 1.0


class WatcherWakeups:
    """When waiting watch streams wake up: at a shared pulse, or at once on admission.

    Every change of the queue moves every waiting fan's position, and during a
    sale changes come hundreds of times a second: waking thousands of watchers
    per change is what overloaded the server. Instead a watcher waits on its own
    future (no timer), resolved by one of:
    - the next pulse after a change (at most one per PULSE_SECONDS for all
      watchers together), when it waits for the next change;
    - the first pulse at or after its own time, when it waits until then (a
      stream that has just sent waits out its interval this way, and wakes
      once, not at every pulse in between);
    - at once, the change that admits its queue number (a heap by number, so a
      change touches only the watchers it admits).
    """

    def __init__(self) -> None:
        self._next_change: list[asyncio.Future[None]] = []
        self._by_time: list[tuple[float, int, asyncio.Future[None]]] = []
        self._by_number: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        # Loop time of the last pulse: a stream that sends because of a pulse
        # counts its interval from it, so that the pulse a second later finds
        # the interval over however long the streams before it took to run.
        self.pulsed_at: float | None = None

    def wait(self, queue_number: int, *, not_before: float | None = None) -> asyncio.Future[None]:
        """A future for one watcher: resolved at the next pulse after a change, or
        (not_before, in loop time) at the first pulse from then on; at once on admission."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        order = next(self._order)
        if not_before is None:
            self._next_change.append(waiter)
        else:
            heapq.heappush(self._by_time, (not_before, order, waiter))
        heapq.heappush(self._by_number, (queue_number, order, waiter))
        return waiter

    @property
    def waiting(self) -> bool:
        return bool(self._next_change or self._by_time)

    def due(self, now: float) -> bool:
        """Some watcher's own time has come."""
        return bool(self._by_time) and self._by_time[0][0] <= now

    def pulse(self, now: float | None = None, *, changed: bool = True) -> None:
        """Wake the watchers whose time has come by `now` and, if the queue
        changed, those waiting for a change. now=None: wake every watcher."""
        woken: list[asyncio.Future[None]] = []
        if changed or now is None:
            woken, self._next_change = self._next_change, []
        if now is None:
            woken.extend(waiter for _, _, waiter in self._by_time)
            self._by_time = []
        else:
            self.pulsed_at = now
            by_time = self._by_time
            while by_time and by_time[0][0] <= now:
                woken.append(heapq.heappop(by_time)[2])
        for waiter in woken:
            if not waiter.done():
                waiter.set_result(None)
        self._drop_woken_from_numbers()

    def admit(self, window_limit: int) -> None:
        """Wake, now, the watchers whose queue number the window has reached."""
        by_number = self._by_number
        while by_number and by_number[0][0] <= window_limit:
            waiter = heapq.heappop(by_number)[2]
            if not waiter.done():
                waiter.set_result(None)

    def _drop_woken_from_numbers(self) -> None:
        # A woken watcher's entry stays in the number heap until admission
        # reaches it; rebuild the heap once most entries are stale, so the
        # far-back watchers' re-waits do not grow it for the whole sale.
        live = len(self._next_change) + len(self._by_time)
        if len(self._by_number) > 2 * live + 64:
            self._by_number = [entry for entry in self._by_number if not entry[2].done()]
            heapq.heapify(self._by_number)


class QueueRuntime:
    def __init__(self, settings: Settings, pool: AsyncConnectionPool, clock: Clock) -> None:
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self._state: AdmissionState | None = None
        self._line = LiveLine()  # empty until the first read: people_ahead by number
        # Called when an adopted change may have freed places (the admission trigger).
        self.on_places_freed: Callable[[], None] | None = None
        self.rate = AdmissionRate()
        self.wakeups = WatcherWakeups()
        # Completed (paid) tokens -> their expiry: refused by the gate until then.
        self._completed: dict[uuid.UUID, datetime] = {}
        # Open watch streams: token id -> number of streams, and the expiry the
        # last presence update gave it.
        self._watchers: dict[uuid.UUID, int] = {}
        self._watch_expiry: dict[uuid.UUID, datetime] = {}
        # Open WatchQueueStatus streams per token (QueuePresence caps them).
        self._streams: dict[uuid.UUID, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        # True while the LISTEN connection is up: readiness needs it (server/app.py).
        self.listening = False
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
                ErrorReason.ERROR_REASON_QUEUE_STARTING,
                "the queue is starting; retry shortly",
                retry_after_seconds=1.0,
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
        previous = self._state
        if previous is not None and state.version <= previous.version:
            return False
        self._state = state
        self.rate.observe(now, state.admitted_total)
        self.changes_applied += 1
        self.wakeups.admit(state.window_limit)
        if self.on_places_freed is not None and _may_free_places(previous, state):
            self.on_places_freed()
        return True

    def people_ahead(self, queue_number: int) -> int:
        """Live fans waiting ahead of this number (0 once admitted), from the line
        read at most LINE_READ_SECONDS ago (see LiveLine)."""
        return self._line.people_ahead(queue_number, self.state.window_limit)

    async def read_line(self) -> None:
        """Re-read the live waiting tokens' numbers now (tests call it to settle)."""
        async with self._pool.connection() as conn:
            await self._read_line(conn)

    async def _read_line(self, conn: psycopg.AsyncConnection) -> None:
        window_limit = self.state.window_limit
        numbers, read_upto = await store.live_waiting_numbers(conn, window_limit, self._clock.now())
        self._line = LiveLine(numbers, read_upto)

    def is_completed(self, token_id: uuid.UUID) -> bool:
        return token_id in self._completed

    def completed_here(self, token_id: uuid.UUID, expires_at: datetime) -> None:
        """This process just committed the token's payment: refuse it now, not at the echo."""
        if expires_at > self._clock.now():
            self._completed[token_id] = expires_at

    async def refresh(self) -> AdmissionState:
        """Read queue_state now and adopt it (the safety net; tests use it to settle)."""
        async with self._pool.connection() as conn:
            state = await store.read_queue_state(conn)
        self.state_reads += 1
        self.apply(state)
        await self.read_line()
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
        # Wait (briefly) until LISTEN is in place and what came before it is read
        # (the tokens paid before this process started among it), so no change
        # is missed and a paid token is refused from the first call.
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
                    # Changes made before LISTEN took effect, the payments' among
                    # them: before this process started, or while this connection
                    # was down (a NOTIFY sent then is lost).
                    await self._reread(conn, completed=True)
                    self._listening.set()
                    self.listening = True
                    loop = asyncio.get_running_loop()
                    reread_at = loop.time() + SAFETY_REREAD_SECONDS
                    while True:
                        async for notice in conn.notifies(timeout=LINE_READ_SECONDS):
                            self.notifications += 1
                            state, tokens = store.decode_change(notice.payload)
                            self.apply(state, tokens)
                        # Between waits, on this connection (no pool slot): the
                        # line every second, the state every few seconds.
                        if loop.time() >= reread_at:
                            await self._reread(conn)
                            self._forget_ended()
                            reread_at = loop.time() + SAFETY_REREAD_SECONDS
                        await self._read_line(conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.listening = False
                log.warning("queue listener lost its connection; reconnecting", exc_info=True)
                await asyncio.sleep(_RECONNECT_SECONDS)

    async def _reread(self, conn: psycopg.AsyncConnection, *, completed: bool = False) -> None:
        state = await store.read_queue_state(conn)
        self.state_reads += 1
        self.apply(state)
        if completed:
            for token_id, expires_at in await store.completed_unexpired(conn, self._clock.now()):
                self._completed[token_id] = expires_at

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

    def open_stream(self, token_id: uuid.UUID, limit: int) -> bool:
        """Take one of the token's `limit` stream places in this process, if one is free."""
        count = self._streams.get(token_id, 0)
        if count >= limit:
            return False
        self._streams[token_id] = count + 1
        return True

    def stream_count(self, token_id: uuid.UUID) -> int:
        return self._streams.get(token_id, 0)

    def close_stream(self, token_id: uuid.UUID) -> None:
        count = self._streams.pop(token_id, 1) - 1
        if count > 0:
            self._streams[token_id] = count

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
            changed = version != pulsed_version or now - pulsed_at >= WATCH_RECHECK_SECONDS
            if changed:
                pulsed_version, pulsed_at = version, now
            if changed or wakeups.due(now):
                wakeups.pulse(now, changed=changed)

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


def _may_free_places(previous: AdmissionState | None, state: AdmissionState) -> bool:
    """Fans left (paid or lapsed), capacity rose, or admission resumed. (The
    first state read is not a change: the job's next pass covers a start.)"""
    if previous is None:
        return False
    return (
        state.completed_count > previous.completed_count
        or state.capacity > previous.capacity
        or (previous.paused and not state.paused)
    )
