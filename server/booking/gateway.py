"""The payment module, as a port: charge and refund, idempotent by key.

The server never moves a fan's money itself: it asks a PaymentGateway. The
key is the server's payment attempt id; calling charge or refund again with
the same key returns the first outcome and moves nothing more, so a retry or
the reconciliation job can always ask again.

WalletGateway, the default, takes the money from the fan's wallet, each call
in its own transaction, and keeps its own book (gateway_charges).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Protocol

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from server.clock import Clock
from server.db.unit_of_work import Lock, LockKind, unit_of_work
from server.wallet import ledger


class ChargeOutcome(StrEnum):
    CHARGED = "charged"  # the money was taken
    DECLINED = "declined"  # not enough balance, or the key was voided: nothing taken


class ChargeState(StrEnum):
    """What the gateway's book says about a key."""

    CHARGED = "charged"
    REFUNDED = "refunded"
    VOIDED = "voided"  # refunded before any charge: the key can no longer charge


class GatewayUnavailable(Exception):
    """The payment module did not answer; the outcome of the call is unknown."""


class PaymentGateway(Protocol):
    # True when the gateway's book lives in this database, so Pay takes the
    # money inside its own transaction (server/booking/wallet_payment.py); a
    # module outside answers False and is paid in three steps.
    in_this_database: bool

    async def charge(self, key: uuid.UUID, user_id: uuid.UUID, amount: int) -> ChargeOutcome:
        """Take amount from the fan, once per key."""
        ...

    async def refund(self, key: uuid.UUID, user_id: uuid.UUID) -> ChargeState:
        """Give back what key took (REFUNDED), or void the key if it took nothing (VOIDED)."""
        ...

    async def lookup(self, key: uuid.UUID) -> ChargeState | None:
        """The state of key's charge; None if the gateway never saw it."""
        ...


class WalletGateway:
    """The default payment module: the fan's wallet, with its own book."""

    in_this_database = True

    def __init__(self, pool: AsyncConnectionPool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def charge(self, key: uuid.UUID, user_id: uuid.UUID, amount: int) -> ChargeOutcome:
        now = self._clock.now()
        try:
            async with unit_of_work(self._pool, self._clock) as unit:
                # The key's row first: a concurrent charge with the same key
                # waits here for this one to end, then reads its outcome.
                cursor = await unit.execute(
                    "INSERT INTO gateway_charges"
                    " (key, user_id, amount, state, created_at, updated_at)"
                    " VALUES (%s, %s, %s, 'charged', %s, %s)"
                    " ON CONFLICT (key) DO NOTHING RETURNING 1",
                    (key, user_id, amount, now, now),
                    locks=[Lock.of(LockKind.PAYMENT_ATTEMPT, key)],  # the attempt's charge
                )
                if await cursor.fetchone() is None:
                    took = await _charge_took_money(unit.conn, key)
                    return ChargeOutcome.CHARGED if took else ChargeOutcome.DECLINED
                if amount > 0:
                    await ledger.apply_entry(
                        unit, user_id, -amount, ledger.EntryKind.PAYMENT, key, now
                    )
        except (ledger.InsufficientBalance, ledger.WalletNotFound):
            # Nothing is written: the key's row went with the rollback, so a
            # later attempt after a top-up may charge.
            return ChargeOutcome.DECLINED
        return ChargeOutcome.CHARGED

    async def refund(self, key: uuid.UUID, user_id: uuid.UUID) -> ChargeState:
        now = self._clock.now()
        async with unit_of_work(self._pool, self._clock) as unit:
            # Void the key if unseen: a charge with this key still on its way
            # then waits on the row, finds it voided and takes nothing.
            await unit.execute(
                "INSERT INTO gateway_charges (key, user_id, amount, state, created_at, updated_at)"
                " VALUES (%s, %s, 0, 'voided', %s, %s) ON CONFLICT (key) DO NOTHING",
                (key, user_id, now, now),
                locks=[Lock.of(LockKind.PAYMENT_ATTEMPT, key)],
            )
            cursor = await unit.execute(
                "SELECT state, user_id, amount FROM gateway_charges WHERE key = %s FOR UPDATE",
                (key,),
                locks=[Lock.of(LockKind.PAYMENT_ATTEMPT, key)],
            )
            row = await cursor.fetchone()
            assert row is not None
            state, owner, amount = ChargeState(row[0]), row[1], int(row[2])
            if state is not ChargeState.CHARGED:
                return state
            if amount > 0:
                await ledger.apply_entry(unit, owner, amount, ledger.EntryKind.REFUND, key, now)
            await unit.execute(
                "UPDATE gateway_charges SET state = 'refunded', updated_at = %s WHERE key = %s",
                (now, key),
            )
        return ChargeState.REFUNDED

    async def lookup(self, key: uuid.UUID) -> ChargeState | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT state FROM gateway_charges WHERE key = %s", (key,))
            row = await cursor.fetchone()
        return None if row is None else ChargeState(row[0])


async def _charge_took_money(conn: AsyncConnection, key: uuid.UUID) -> bool:
    """True if key's existing charge took the money (charged, or later refunded)."""
    cursor = await conn.execute("SELECT state FROM gateway_charges WHERE key = %s", (key,))
    row = await cursor.fetchone()
    return row is not None and row[0] in ("charged", "refunded")
