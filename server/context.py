"""The platform every servicer, use case and job may depend on, built once by server.app.

Only what is not a feature: settings, pools, the clock, the signer, the job
runner, metrics and the start/stop hooks. The features' own runtimes (the
queue's, booking's, the accounts') are built by the composition root
(server/app.py) and handed to the servicers and jobs that use them, so no
module here imports a feature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.config import Settings
from server.jobs import JobRunner
from server.observability.metrics import Metrics
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

    @property
    def read_pool(self) -> AsyncConnectionPool:
        """Where reads that may lag the primary go: the browsing lists.

        A streaming replica is behind the primary by its replay delay, so only
        reads that tolerate a moment-old answer use it; everything that checks
        before it writes reads the primary.
        """
        return self.pool if self.replica_pool is None else self.replica_pool
