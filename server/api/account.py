"""concert.v1.AccountService: decode the request, call the use case, encode the reply."""

from __future__ import annotations

from grpc.aio import ServicerContext

from concert.v1 import account_pb2, account_pb2_grpc
from server.accounts.authentication import sign_in
from server.accounts.registration import sign_up
from server.accounts.runtime import AccountRuntime
from server.api.features import Features
from server.client_address import caller_address
from server.context import ServiceContext


class AccountService(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, ctx: ServiceContext, accounts: AccountRuntime) -> None:
        self._ctx = ctx
        self._accounts = accounts

    async def SignUp(
        self, request: account_pb2.SignUpRequest, context: ServicerContext
    ) -> account_pb2.SignUpResponse:
        ctx = self._ctx
        return await sign_up(ctx.pool, ctx.clock, self._accounts, request)

    async def SignIn(
        self, request: account_pb2.SignInRequest, context: ServicerContext
    ) -> account_pb2.SignInResponse:
        ctx = self._ctx
        token, session = await sign_in(
            ctx.pool,
            ctx.clock,
            ctx.signer,
            self._accounts,
            request.email,
            request.password,
            ctx.settings.session_ttl_seconds,
            caller_address(context, ctx.settings.trusted_proxies),
            request.previous_session_token,
        )
        response = account_pb2.SignInResponse(user_id=str(session.user_id), session_token=token)
        response.expire_time.FromDatetime(session.expire_time)
        return response


def register(server: object, ctx: ServiceContext, features: Features) -> None:
    account_pb2_grpc.add_AccountServiceServicer_to_server(
        AccountService(ctx, features.accounts), server
    )
