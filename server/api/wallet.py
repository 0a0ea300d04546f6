"""concert.v1.WalletService: decode the request, call the use case, encode the reply.

The credential is the operator's key (any wallet) or a session from SignIn
(the fan's own wallet); anything else is UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac

from grpc.aio import ServicerContext

from concert.v1 import wallet_pb2, wallet_pb2_grpc
from server.accounts.sessions import verify_session
from server.api.features import Features
from server.context import ServiceContext
from server.credentials import bearer_credential
from server.errors import ErrorReason, Unauthenticated
from server.wallet.balance import WalletCaller, charge_wallet, get_balance


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def Charge(
        self, request: wallet_pb2.ChargeRequest, context: ServicerContext
    ) -> wallet_pb2.ChargeResponse:
        return await charge_wallet(self._ctx, self._caller(context), request)

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: ServicerContext
    ) -> wallet_pb2.GetBalanceResponse:
        return await get_balance(self._ctx, self._caller(context), request)

    def _caller(self, context: ServicerContext) -> WalletCaller:
        credential = bearer_credential(context.invocation_metadata())
        admin_key = self._ctx.settings.admin_key
        if (
            credential
            and admin_key
            and hmac.compare_digest(credential.encode(), admin_key.encode())
        ):
            return WalletCaller(user_id=None)
        session = verify_session(self._ctx.signer, credential, self._ctx.clock.now())
        if session is None:
            raise Unauthenticated(
                ErrorReason.ERROR_REASON_INVALID_CREDENTIALS,
                "a session credential or the operator's key is required",
            )
        return WalletCaller(user_id=session.user_id)


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(WalletService(ctx), server)
