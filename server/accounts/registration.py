"""SignUp: validate, hash off the event loop, insert the user and wallet in one transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from concert.v1 import account_pb2
from server.accounts import store
from server.accounts.emails import email_problem, normalise_email, password_problem
from server.accounts.runtime import AccountRuntime
from server.clock import Clock
from server.db.unit_of_work import RequestRecord, UnitOfWork, run_once
from server.errors import AlreadyExists, ErrorReason, Violations
from server.validation import parse_request_id


async def sign_up(
    pool: AsyncConnectionPool,
    clock: Clock,
    accounts: AccountRuntime,
    request: account_pb2.SignUpRequest,
) -> account_pb2.SignUpResponse:
    violations = Violations()
    email = normalise_email(request.email)
    if problem := email_problem(email):
        violations.add("email", problem)
    if problem := password_problem(request.password):
        violations.add("password", problem)
    request_id = parse_request_id(violations, request.request_id)
    violations.raise_if_any()

    # Hash before the transaction: the KDF's tens of milliseconds must not hold
    # a connection or a lock.
    password_hash = await accounts.pacing.attempt(  # HashingBusy when full
        lambda: accounts.hasher.hash(request.password)
    )

    async def create(unit: UnitOfWork) -> account_pb2.SignUpResponse:
        user_id = uuid.uuid4()
        now = clock.now()
        if not await store.insert_user_with_wallet(unit.conn, user_id, email, password_hash, now):
            raise AlreadyExists(
                ErrorReason.ERROR_REASON_EMAIL_TAKEN, "an account already uses this email"
            )
        return _response(user_id, email, now)

    return await run_once(
        pool,
        clock,
        RequestRecord("AccountService.SignUp", request_id, request, account_pb2.SignUpResponse),
        create,
    )


def _response(user_id: uuid.UUID, email: str, now: datetime) -> account_pb2.SignUpResponse:
    response = account_pb2.SignUpResponse(user_id=str(user_id), email=email)
    response.create_time.FromDatetime(now)
    return response
