"""Use cases of WalletService: charge a wallet, read its balance.

Who may act: the operator on any wallet, a signed-in fan on their own only
(WalletCaller, built by the servicer from the call's credential).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from concert.v1 import wallet_pb2
from server.context import ServiceContext
from server.db.unit_of_work import RequestRecord, UnitOfWork, run_once
from server.errors import ErrorReason, FailedPrecondition, NotFound, PermissionDenied, Violations
from server.validation import parse_request_id, parse_uuid
from server.wallet import ledger

MIN_CHARGE = 1
MAX_CHARGE = 10_000_000


@dataclass(frozen=True)
class WalletCaller:
    """The operator (user_id None) or the signed-in owner of user_id."""

    user_id: uuid.UUID | None

    @property
    def is_operator(self) -> bool:
        return self.user_id is None

    def require_may_act_on(self, owner: uuid.UUID) -> None:
        if not self.is_operator and self.user_id != owner:
            raise PermissionDenied(
                ErrorReason.ERROR_REASON_NOT_WALLET_OWNER, "a session acts on its own wallet only"
            )

    @property
    def scope(self) -> str:
        return "operator" if self.user_id is None else str(self.user_id)


def _user_not_found(user_id: uuid.UUID) -> NotFound:
    return NotFound(
        ErrorReason.ERROR_REASON_USER_NOT_FOUND, "no such user", metadata={"user_id": str(user_id)}
    )


async def charge_wallet(
    ctx: ServiceContext, caller: WalletCaller, request: wallet_pb2.ChargeRequest
) -> wallet_pb2.ChargeResponse:
    violations = Violations()
    user_id = parse_uuid(violations, "user_id", request.user_id)
    if not MIN_CHARGE <= request.amount <= MAX_CHARGE:
        violations.add("amount", f"must be from {MIN_CHARGE} to {MAX_CHARGE:,}")
    request_id = parse_request_id(violations, request.request_id)
    violations.raise_if_any()
    assert user_id is not None
    caller.require_may_act_on(user_id)

    async def execute(unit: UnitOfWork) -> wallet_pb2.ChargeResponse:
        try:
            entry = await ledger.apply_entry(
                unit, user_id, request.amount, ledger.EntryKind.CHARGE, request_id, now
            )
        except ledger.WalletNotFound:
            raise _user_not_found(user_id) from None
        except ledger.BalanceLimitExceeded:
            raise FailedPrecondition(
                ErrorReason.ERROR_REASON_BALANCE_LIMIT_EXCEEDED,
                f"the balance would pass {ledger.MAX_BALANCE:,}",
                metadata={"max_balance": str(ledger.MAX_BALANCE)},
            ) from None
        return wallet_pb2.ChargeResponse(
            user_id=str(user_id), balance=entry.balance, ledger_entry_id=entry.entry_id
        )

    now = ctx.clock.now()
    return await run_once(
        ctx.pool,
        ctx.clock,
        RequestRecord(
            f"WalletService.Charge:{caller.scope}", request_id, request, wallet_pb2.ChargeResponse
        ),
        execute,
    )


async def get_balance(
    ctx: ServiceContext, caller: WalletCaller, request: wallet_pb2.GetBalanceRequest
) -> wallet_pb2.GetBalanceResponse:
    violations = Violations()
    user_id = parse_uuid(violations, "user_id", request.user_id)
    violations.raise_if_any()
    assert user_id is not None
    caller.require_may_act_on(user_id)
    async with ctx.pool.connection() as conn:
        wallet = await ledger.read_wallet(conn, user_id)
    if wallet is None:
        raise _user_not_found(user_id)
    balance, updated_at = wallet
    update_time = Timestamp()
    update_time.FromDatetime(updated_at)
    return wallet_pb2.GetBalanceResponse(
        user_id=str(user_id), balance=balance, update_time=update_time
    )
