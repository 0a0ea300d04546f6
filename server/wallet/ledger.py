"""The SQL of the wallet aggregate: a balance and its append-only ledger.

Every change is ONE statement that moves the balance and appends the ledger
row together, guarded by the bounds in its WHERE clause. The UPDATE takes the
wallet's row lock, so concurrent changes to one wallet queue up and none is
lost; the CHECK on wallets is the last line of defence.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from psycopg import AsyncConnection

from server.db.unit_of_work import Db, Lock, LockKind, UnitOfWork, execute

MAX_BALANCE = 1_000_000_000


class EntryKind(StrEnum):
    CHARGE = "charge"  # money added by WalletService.Charge
    PAYMENT = "payment"  # money taken by the payment module
    REFUND = "refund"  # money the payment module gave back


@dataclass(frozen=True)
class Entry:
    entry_id: int
    balance: int


class WalletNotFound(Exception):
    pass


class InsufficientBalance(Exception):
    pass


class BalanceLimitExceeded(Exception):
    pass


def move_and_record(delta: str = "%(delta)s", guard: str = "true") -> str:
    """The balance move and its ledger row, as two CTEs (`moved`, `entry`) for a
    statement that may write more beside them. `delta` is an SQL expression for
    the amount (a parameter by default; Pay's sale reads it from the seat it
    sold), `guard` a condition the move also needs. A move of 0 (a free seat)
    writes no ledger row. entry_params() gives the other parameters."""
    return f"""
    moved AS (
        UPDATE wallets SET balance = balance + ({delta}), updated_at = %(now)s
         WHERE user_id = %(user_id)s AND balance + ({delta}) BETWEEN 0 AND %(max)s
           AND ({guard})
        RETURNING user_id, balance
    ), entry AS (
        INSERT INTO wallet_ledger (user_id, amount, kind, reference, balance_after, created_at)
        SELECT user_id, ({delta}), %(kind)s, %(reference)s, balance, %(now)s FROM moved
         WHERE ({delta}) <> 0
        RETURNING id, balance_after
    )
"""


_APPLY = f"WITH {move_and_record()} SELECT id, balance_after FROM entry"


def entry_params(
    user_id: uuid.UUID,
    delta: int | None,
    kind: EntryKind,
    reference: uuid.UUID | None,
    now: datetime,
) -> dict[str, object]:
    """The parameters of move_and_record (delta None: the statement says it in SQL)."""
    return {
        "delta": delta,
        "now": now,
        "user_id": user_id,
        "max": MAX_BALANCE,
        "kind": kind.value,
        "reference": reference,
    }


async def apply_entry(
    db: Db,
    user_id: uuid.UUID,
    delta: int,
    kind: EntryKind,
    reference: uuid.UUID | None,
    now: datetime,
) -> Entry:
    """Move the balance by delta and record it; raise if the wallet or a bound says no."""
    if delta == 0:
        raise ValueError("a ledger entry moves money")
    cursor = await execute(
        db,
        _APPLY,
        entry_params(user_id, delta, kind, reference, now),
        locks=[Lock.of(LockKind.WALLET, user_id)],
    )
    row = await cursor.fetchone()
    if row is not None:
        return Entry(entry_id=row[0], balance=row[1])
    balance = await read_balance(db.conn if isinstance(db, UnitOfWork) else db, user_id)
    if balance is None:
        raise WalletNotFound(user_id)
    if delta < 0:
        raise InsufficientBalance(user_id)
    raise BalanceLimitExceeded(user_id)


async def read_balance(conn: AsyncConnection, user_id: uuid.UUID) -> int | None:
    cursor = await conn.execute("SELECT balance FROM wallets WHERE user_id = %s", (user_id,))
    row = await cursor.fetchone()
    return None if row is None else int(row[0])


async def read_wallet(conn: AsyncConnection, user_id: uuid.UUID) -> tuple[int, datetime] | None:
    """(balance, updated_at) of the user's wallet, if any."""
    cursor = await conn.execute(
        "SELECT balance, updated_at FROM wallets WHERE user_id = %s", (user_id,)
    )
    row = await cursor.fetchone()
    return None if row is None else (int(row[0]), row[1])
