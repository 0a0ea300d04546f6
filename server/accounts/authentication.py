"""Checking who a caller is: by password (one KDF run) or by session credential (one HMAC).

Unknown email and wrong password fail alike, with the same message and one
hash each (a decoy hash for unknown emails), so neither the answer nor its
timing tells which emails have accounts.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from server.accounts import store
from server.accounts.emails import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH, normalise_email
from server.accounts.runtime import AccountRuntime
from server.accounts.sessions import Session, issue_session, verify_session
from server.accounts.throttle import Reservation
from server.clock import Clock
from server.errors import ErrorReason, ResourceExhausted, Unauthenticated, Violations
from server.signing import Signer

_WRONG_PASSWORD_MESSAGE = "unknown email or wrong password"


def check_password_fields(
    violations: Violations, email: str, password: str, prefix: str = ""
) -> None:
    """Bounds on what a sign-in accepts (so no one makes us hash a megabyte)."""
    if not email.strip():
        violations.add(prefix + "email", "required")
    elif len(email) > MAX_EMAIL_LENGTH + 16:
        violations.add(prefix + "email", f"at most {MAX_EMAIL_LENGTH} characters")
    if not password:
        violations.add(prefix + "password", "required")
    elif len(password) > MAX_PASSWORD_LENGTH:
        violations.add(prefix + "password", f"at most {MAX_PASSWORD_LENGTH} characters")


async def authenticate_password(
    pool: AsyncConnectionPool,
    clock: Clock,
    accounts: AccountRuntime,
    email: str,
    password: str,
    client_address: str,
    previous_session: str = "",
) -> uuid.UUID:
    """The user id for a correct email and password; UNAUTHENTICATED otherwise.

    The attempt first takes a place in the hashing line (PASSWORD_HASHING_BUSY
    at once if full, before any database work: refusing a storm costs no
    connection), then is counted against the sign-in budgets before the hash
    (server/accounts/throttle.py), so a burst cannot evaluate more guesses than
    the budget allows. Only calls that will be hashed count against the
    budgets, so a crowd of fans behind one address is refused for being many,
    not for failing. Refusals are paced (server/accounts/pacing.py): beyond a
    rate, a refused attempt waits its retry delay here and is tried once more.
    """
    email = normalise_email(email)
    hasher, throttle = accounts.hasher, accounts.throttle
    claimed = _past_sign_in(accounts.signer, previous_session, clock)

    # Tried once, or (a refusal beyond the pacing's rate) once more after its
    # retry delay, with the email and the past session read once.
    async def attempt() -> uuid.UUID:
        with ExitStack() as held:
            # A caller who shows a past session hashes in the proven lane, unless
            # the session turns out not to be this account's.
            lane = held.enter_context(hasher.place(proven=claimed is not None))
            async with pool.connection() as conn:
                found = await store.find_credentials(conn, email)
            # The connection is back in the pool before the hash runs.
            if lane is hasher.proven and (found is None or found[0] != claimed):
                held.close()
                lane = held.enter_context(hasher.place())
            proven = found is not None and found[0] == claimed
            reservation = await throttle.reserve(email, client_address, clock.now(), proven=proven)
            if not isinstance(reservation, Reservation):
                raise ResourceExhausted(
                    ErrorReason.ERROR_REASON_TOO_MANY_ATTEMPTS,
                    "too many failed sign-ins for this email or from this address; wait and retry",
                    retry_after_seconds=reservation,
                )
            try:
                ok = await hasher.verify_in_place(lane, password, found[1] if found else None)
            except BaseException:  # not evaluated (a cancel, the executor gone): no failure
                await throttle.release(reservation)
                raise
        if not ok or found is None:
            raise Unauthenticated(
                ErrorReason.ERROR_REASON_INVALID_CREDENTIALS, _WRONG_PASSWORD_MESSAGE
            )
        throttle.succeeded_soon(reservation)
        return found[0]

    return await accounts.pacing.attempt(attempt)


# How old a session credential may be and still prove a past sign-in.
PROOF_MAX_AGE = timedelta(days=30)


def _past_sign_in(signer: Signer | None, credential: str, clock: Clock) -> uuid.UUID | None:
    """The account a session credential (even expired, up to PROOF_MAX_AGE) was issued to."""
    if signer is None or not credential or len(credential) > 2048:
        return None
    session = verify_session(signer, credential, clock.now(), expired_for=PROOF_MAX_AGE)
    return None if session is None else session.user_id


async def sign_in(
    pool: AsyncConnectionPool,
    clock: Clock,
    signer: Signer,
    accounts: AccountRuntime,
    email: str,
    password: str,
    session_ttl_seconds: int,
    client_address: str,
    previous_session: str = "",
) -> tuple[str, Session]:
    violations = Violations()
    check_password_fields(violations, email, password)
    violations.raise_if_any()
    user_id = await authenticate_password(
        pool, clock, accounts, email, password, client_address, previous_session
    )
    return issue_session(signer, user_id, clock.now(), session_ttl_seconds)


def authenticate_session(signer: Signer, clock: Clock, credential: str) -> uuid.UUID:
    """The user id of a valid session credential; UNAUTHENTICATED otherwise."""
    session = verify_session(signer, credential, clock.now())
    if session is None:
        raise Unauthenticated(
            ErrorReason.ERROR_REASON_INVALID_CREDENTIALS,
            "the session credential is invalid or expired",
        )
    return session.user_id
