"""What every servicer and use case may depend on, built once by server.app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from server.accounts.passwords import PasswordHasher
from server.accounts.runtime import AccountRuntime
from server.booking.gateway import PaymentGateway, WalletGateway
from server.booking.seat_list_cache import SeatListCache
from server.clock import Clock
from server.config import Settings
from server.jobs import JobRunner
from server.observability.metrics import Metrics
from server.queue.runtime import QueueRuntime
from server.signing import Signer

Hook = Callable[[], Awaitable[None]]


@dataclass
class ServiceContext:
    settings: Settings
    pool: AsyncConnectionPool
    clock: Clock
    signer: Signer
    jobs: JobRunner
    # Features register what must run after the server starts and before the
    # pool closes (listeners, notifiers); run in order, stopped in reverse.
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    # This app's Prometheus registry; features publish gauges through it.
    metrics: Metrics = field(default_factory=Metrics)
    # A pool on a read replica (CONCERT_DATABASE_READ_URL), None without one;
    # use read_pool, which falls back to the primary.
    replica_pool: AsyncConnectionPool | None = None
    # The password hasher's thread pool and the sign-in throttle (server.accounts).
    accounts: AccountRuntime = field(init=False)
    # The queue's admission state in memory, its notifier and watchers (server.queue).
    queue: QueueRuntime = field(init=False)
    # The payment module (server.booking.gateway); tests swap in a faulty one.
    gateway: PaymentGateway = field(init=False)
    # ListAvailableSeats pages served from memory for a moment (server.booking).
    seat_lists: SeatListCache = field(init=False)

    @property
    def read_pool(self) -> AsyncConnectionPool:
        """Where reads that may lag the primary go: the browsing lists.

        A streaming replica is behind the primary by its replay delay, so only
        reads that tolerate a moment-old answer use it; everything that checks
        before it writes reads the primary.
        """
        return self.pool if self.replica_pool is None else self.replica_pool

    def __post_init__(self) -> None:
        self.accounts = AccountRuntime(
            PasswordHasher(self.settings.password_hash_cost), signer=self.signer
        )
        self.queue = QueueRuntime(self.settings, self.pool, self.clock)
        self.gateway = WalletGateway(self.pool, self.clock)
        self.seat_lists = SeatListCache(timedelta(milliseconds=self.settings.seat_list_max_age_ms))

        async def close_hasher() -> None:
            self.accounts.hasher.close()

        self.on_stop.append(close_hasher)
