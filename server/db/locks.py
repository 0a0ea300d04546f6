"""Every PostgreSQL advisory lock the service takes, in one key space.

Keys are (namespace, id) pairs, the two-int form of pg_advisory_lock, so no
two features can collide by accident. A new lock gets a namespace here, with a
comment saying what it protects.
"""

from __future__ import annotations

import zlib
from enum import IntEnum


class LockNamespace(IntEnum):
    # Applying migrations: one process at a time (session lock).
    MIGRATIONS = 1
    # A scheduled job's run: one process at a time per job (session lock).
    JOBS = 2
    # Creating the server secrets on first start (transaction lock).
    SECRETS = 3
    # Seeding the demo data: several workers starting at once create it once (session lock).
    DEMO_SEED = 4
    # One fan's queue lock: IssueToken's locked path (a fan with a live token,
    # or whose first-token claim lost a race) takes it, so one fan's issues
    # take turns and a fan never holds two live tokens (transaction lock).
    QUEUE_FAN = 10
    # The admission window (one key, 0): every IssueToken holds it shared while it
    # draws and inserts its queue number; the admission pass and SetAdmission take it
    # exclusive, so they never count around a number drawn but not yet committed
    # (transaction lock; docs/queue.md, "bounded").
    ADMISSION = 11
    # One fan's hold cap: ReserveSeat counts the fan's live holds, then adds
    # one; two holds of one fan on different seats take turns here, so both
    # cannot count under the cap (transaction lock).
    HOLD_CAP = 20
    # A sign-in budget's count-then-add: one email's attempts, and one client
    # address's, take turns (transaction locks; server/accounts/throttle.py).
    SIGN_IN_EMAIL = 30
    SIGN_IN_ADDRESS = 31


def lock_id(name: str) -> int:
    """A stable signed 32-bit id for a name (a job, a user UUID's text)."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


MIGRATIONS_LOCK = (int(LockNamespace.MIGRATIONS), 0)
