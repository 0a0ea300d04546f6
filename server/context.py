"""What every servicer and use case may depend on, built once by server.app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.config import Settings
from server.jobs import JobRunner
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
