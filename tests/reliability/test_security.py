"""Security: guessing is throttled, tokens are unforgeable and expire, fans stay in
their own lane, keys are compared in constant time, secrets never reach a log,
and every query is parameterised."""

from __future__ import annotations

import ast
import asyncio
import hmac
import logging
import uuid
from pathlib import Path

import grpc
import pytest

from concert.v1 import (
    account_pb2,
    admin_pb2,
    concert_pb2,
    payment_pb2,
    queue_pb2,
    reservation_pb2,
    wallet_pb2,
)
from server import admin_auth
from server.accounts.throttle import FAILURE_WINDOW, PAIR_LIMIT
from server.app import App
from server.clock import FakeClock
from server.observability.logs import JsonFormatter
from server.queue.tokens import QueueToken, read_queue_token, sign_queue_token
from server.signing import Signer
from tests.fans import admitted_fan, new_fan
from tests.reliability.helpers import assert_invariants, booked_world
from tests.support import ADMIN, TEST_ADMIN_KEY, Stubs, bearer, error_details, running_app


async def _code(call: object) -> tuple[grpc.StatusCode, str | None]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        details = error_details(err)
        return details.code, details.reason
    return grpc.StatusCode.OK, None


async def test_failed_sign_ins_by_either_door_throttle_the_email_from_that_address(
    app: App, stubs: Stubs
) -> None:
    fan = await new_fan(stubs)
    wrong = queue_pb2.PasswordCredential(email=fan.email, password="not the password")
    # Guesses through SignIn and through IssueToken's password count together.
    # (Other addresses keep their own budget: tests/accounts/test_throttling.py.)
    for i in range(PAIR_LIMIT):
        if i % 2:
            call = stubs.account.SignIn(
                account_pb2.SignInRequest(email=fan.email, password=wrong.password)
            )
        else:
            call = stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(password=wrong))
        assert await _code(call) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    right = queue_pb2.PasswordCredential(email=fan.email.upper(), password=fan.password)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(password=right))
    details = error_details(err.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_ATTEMPTS",
    )
    assert details.retry is not None and details.retry.retry_delay.seconds > 0
    # Even the right password waits out the window; then it works.
    app.ctx.clock.advance(FAILURE_WINDOW.total_seconds())  # type: ignore[attr-defined]
    issued = await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(password=right))
    assert issued.token


async def test_tokens_and_sessions_cannot_be_forged_and_expire(app: App, stubs: Stubs) -> None:
    fan = await admitted_fan(stubs)
    other = await admitted_fan(stubs)
    claims = read_queue_token(app.ctx.signer, fan.token)
    assert claims is not None
    browse = concert_pb2.ListConcertsRequest()

    # Claims rewritten (another fan's id, an earlier number, a later expiry),
    # re-encoded with the original MAC; or signed with a key that is not ours.
    mac = fan.token.rpartition(".")[2]
    other_payload = other.token.rpartition(".")[0]  # its key id and payload
    stranger = Signer(b"k" * 32)
    forgeries = {
        "other fan's claims, this MAC": f"{other_payload}.{mac}",
        "truncated": fan.token[:-10],
        "foreign key": sign_queue_token(stranger, claims),
        "session as token": fan.session_token,
    }
    for name, forged in forgeries.items():
        code = await _code(stubs.concert.ListConcerts(browse, metadata=bearer(forged)))
        assert code == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"), name
    for credential in (fan.token, sign_queue_token(stranger, claims)):
        code = await _code(
            stubs.wallet.GetBalance(
                wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=bearer(credential)
            )
        )
        assert code[0] == grpc.StatusCode.UNAUTHENTICATED
    # A token whose signed expiry has passed is refused by the gate at once.
    expired = sign_queue_token(
        app.ctx.signer,
        QueueToken(claims.token_id, claims.user_id, claims.queue_number, app.ctx.clock.now()),
    )
    code = await _code(stubs.concert.ListConcerts(browse, metadata=bearer(expired)))
    assert code == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    # Time passes: the real token and the session lapse too.
    app.ctx.clock.advance(app.ctx.settings.session_ttl_seconds + 1)  # type: ignore[attr-defined]
    code = await _code(stubs.concert.ListConcerts(browse, metadata=fan.metadata))
    assert code == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    code = await _code(
        stubs.wallet.GetBalance(
            wallet_pb2.GetBalanceRequest(user_id=fan.user_id), metadata=fan.session_metadata
        )
    )
    assert code[0] == grpc.StatusCode.UNAUTHENTICATED
    code = await _code(
        stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=fan.session_token))
    )
    assert code == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_a_fan_cannot_read_cancel_or_pay_anothers_reservation(app: App, stubs: Stubs) -> None:
    victim = await booked_world(app, stubs)
    intruder = await admitted_fan(stubs)
    await stubs.wallet.Charge(
        wallet_pb2.ChargeRequest(user_id=intruder.user_id, amount=100_000), metadata=ADMIN
    )
    as_intruder = intruder.metadata
    attempts = {
        "read": stubs.reservation.GetReservation(
            reservation_pb2.GetReservationRequest(reservation_id=victim.held_reservation_id),
            metadata=as_intruder,
        ),
        "cancel": stubs.reservation.CancelReservation(
            reservation_pb2.CancelReservationRequest(reservation_id=victim.held_reservation_id),
            metadata=as_intruder,
        ),
        "pay": stubs.payment.Pay(
            payment_pb2.PayRequest(reservation_id=victim.held_reservation_id),
            metadata=as_intruder,
        ),
        "read payment": stubs.payment.GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=victim.payment_id), metadata=as_intruder
        ),
    }
    for name, call in attempts.items():
        code, _ = await _code(call)
        assert code == grpc.StatusCode.NOT_FOUND, name  # not even "it exists"
    for call in (
        stubs.wallet.GetBalance(
            wallet_pb2.GetBalanceRequest(user_id=victim.fan.user_id),
            metadata=intruder.session_metadata,
        ),
        stubs.wallet.Charge(
            wallet_pb2.ChargeRequest(user_id=victim.fan.user_id, amount=1),
            metadata=intruder.session_metadata,
        ),
    ):
        assert await _code(call) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_WALLET_OWNER")
    # Nothing moved: the victim's hold stands, the intruder paid nothing.
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT state FROM reservations WHERE id = %s", (victim.held_reservation_id,)
        )
        assert await cursor.fetchone() == ("held",)
        cursor = await conn.execute(
            "SELECT count(*) FROM payment_attempts WHERE user_id = %s", (intruder.user_id,)
        )
        assert await cursor.fetchone() == (0,)
        cursor = await conn.execute(
            "SELECT balance FROM wallets WHERE user_id = %s", (intruder.user_id,)
        )
        assert await cursor.fetchone() == (100_000,)
    await assert_invariants(app)


async def test_operator_key_is_compared_in_constant_time(
    app: App, stubs: Stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin_auth.hmac, "compare_digest", spy)
    wrong = TEST_ADMIN_KEY[:-1] + "!"
    code = await _code(
        stubs.admin.GetQueueStats(
            admin_pb2.GetQueueStatsRequest(),
            metadata=bearer(wrong),
        )
    )
    assert code == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_KEY_INVALID")
    assert (wrong.encode(), TEST_ADMIN_KEY.encode()) in compared


SECRET_MARKERS = ("correct horse battery", "not the password")


async def test_no_password_token_or_key_reaches_the_log(
    app: App, stubs: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = await booked_world(app, stubs)  # sign up, sign in, token, charge, hold, pay
    fan = await admitted_fan(stubs)
    for _ in range(PAIR_LIMIT + 1):  # failures and the throttle
        await _code(
            stubs.account.SignIn(
                account_pb2.SignInRequest(email=fan.email, password="not the password")
            )
        )
    await _code(stubs.concert.ListConcerts(concert_pb2.ListConcertsRequest(), metadata=bearer("x")))
    await _code(
        stubs.payment.Pay(
            payment_pb2.PayRequest(reservation_id=str(uuid.uuid4())), metadata=fan.metadata
        )
    )
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute("SELECT secret FROM signing_keys")
        signing_keys = [bytes(row[0]) for row in await cursor.fetchall()]
    secrets = [
        *SECRET_MARKERS,
        world.fan.session_token,
        world.fan.token,
        fan.session_token,
        fan.token,
        TEST_ADMIN_KEY,
        *(key.hex() for key in signing_keys),
    ]
    # Every part of a token too: its payload and its MAC (not the key id: "1").
    secrets += [part for token in (fan.token, fan.session_token) for part in token.split(".")[1:]]
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert len(caplog.records) > 20  # the calls were logged (one DEBUG line per call)
    leaked = [secret for secret in secrets if secret in text]
    assert not leaked


# -- only parameterised SQL ------------------------------------------------

SERVER = Path(__file__).resolve().parents[2] / "server"
_SQL_METHODS = {"execute", "executemany", "copy"}
# Queries held in a value rather than written at the call, each vetted:
# the invariants are module literals; migrations are the package's own files.
_VETTED_DYNAMIC = {
    ("invariants.py", "invariant.query"),
    ("migrate.py", "sql.SQL(migration.sql)"),
    # The unit of work passes its callers' statements on; each call site is
    # checked where it is written (unit.execute / execute(db, ...) below).
    ("unit_of_work.py", "query"),
    ("unit_of_work.py", "statement.query"),
    ("unit_of_work.py", "statements[0].query"),
    ("unit_of_work.py", "self._begin_sql()"),  # one of two literals
    ("unit_of_work.py", "script"),
}


def _constant_name(name: str) -> bool:
    return name.lstrip("_").isupper()


def _static_locals(function: ast.AST) -> set[str]:
    """Local names only ever assigned string literals (or a choice between them)."""
    assigned: dict[str, bool] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    ok = _literal_choice(node.value)
                    assigned[target.id] = assigned.get(target.id, True) and ok
    return {name for name, ok in assigned.items() if ok}


def _literal_choice(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.IfExp):
        return _literal_choice(node.body) and _literal_choice(node.orelse)
    return False


def is_static_sql(node: ast.AST, static_names: set[str]) -> bool:
    """True if the query text cannot contain caller data: literals and constants only."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return all(
            isinstance(part, ast.Constant)
            or (isinstance(part, ast.FormattedValue) and is_static_sql(part.value, static_names))
            for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return is_static_sql(node.left, static_names) and is_static_sql(node.right, static_names)
    if isinstance(node, ast.Name):
        return _constant_name(node.id) or node.id in static_names
    if isinstance(node, ast.Attribute):  # another module's constant: store.CHANNEL
        return _constant_name(node.attr)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        # psycopg.sql composition: sql.SQL("...").format(sql.Identifier(name))
        owner = node.func.value
        return (
            node.func.attr == "format"
            and isinstance(owner, ast.Call)
            and isinstance(owner.func, ast.Attribute)
            and owner.func.attr == "SQL"
        )
    return False


def unparameterised_queries(source: str, filename: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    module_static = _static_locals(tree)
    for function in functions:
        static = module_static | _static_locals(function)
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in _SQL_METHODS:
                arguments = node.args
            elif isinstance(node.func, ast.Name) and node.func.id == "execute":
                arguments = node.args[1:]  # server.db.unit_of_work.execute(db, query, ...)
            elif isinstance(node.func, ast.Name) and node.func.id == "Statement":
                arguments = node.args  # unit_of_work.Statement(query, params, locks)
            else:
                continue
            if not arguments:
                continue
            query = arguments[0]
            if (filename, ast.unparse(query)) in _VETTED_DYNAMIC:
                continue
            if not is_static_sql(query, static):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(query)[:80]}")
    return sorted(set(found))


def test_the_scanner_catches_string_built_sql() -> None:
    bad = """
async def f(conn, email):
    await conn.execute(f"SELECT id FROM users WHERE email = '{email}'")
    await conn.execute("SELECT id FROM users WHERE email = '%s'" % email)
    await conn.execute("SELECT id FROM users WHERE email = " + email)
    await conn.execute("SELECT {}".format(email))
    await execute(db, f"SELECT id FROM users WHERE email = '{email}'")
    await unit.send(Statement("SELECT id FROM users WHERE email = " + email))
"""
    good = """
COLUMNS = "id, email"
async def f(conn, email, locked):
    lock = " FOR UPDATE" if locked else ""
    await conn.execute(f"SELECT {COLUMNS} FROM users WHERE email = %s{lock}", (email,))
"""
    assert len(unparameterised_queries(bad, "bad.py")) == 6
    assert unparameterised_queries(good, "good.py") == []


def test_every_query_in_server_is_parameterised() -> None:
    found = []
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        found += unparameterised_queries(path.read_text(), path.name)
    assert not found, "\n".join(found)


async def test_credentials_decode_strictly(app: App, stubs: Stubs) -> None:
    """The standard base64 decoder skipped stray characters: `token + "!!"` was the token."""
    from server import base64url

    fan = await admitted_fan(stubs)
    browse = concert_pb2.ListConcertsRequest()
    payload, _, mac = fan.token.rpartition(".")  # payload: the key id and the payload
    # The last character of the MAC changed within its unused low bits: same bytes
    # to a lenient decoder, another spelling to a strict one.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    for variant in (
        fan.token + "!!",
        f"{payload}.{mac}==",
        f"{payload}.{tweaked}",
    ):
        code = await _code(stubs.concert.ListConcerts(browse, metadata=bearer(variant)))
        assert code == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"), variant
    code = await _code(
        stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=fan.session_token + "!!"))
    )
    assert code == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    for bad in ("a", "ab!c", "abc=", "a b"):
        with pytest.raises(ValueError):
            base64url.decode(bad)
    assert base64url.decode(base64url.encode(b"\x00\xff\x10")) == b"\x00\xff\x10"


async def test_a_protected_change_checks_the_stored_token_against_the_claims(
    app: App, stubs: Stubs
) -> None:
    """Claims signed with our key but naming another user for a real token id (what a
    leaked key would mint) pass the gate, and change nothing."""
    world = await booked_world(app, stubs)
    victim = await admitted_fan(stubs)
    claims = read_queue_token(app.ctx.signer, victim.token)
    assert claims is not None
    intruder = await new_fan(stubs)
    minted = sign_queue_token(
        app.ctx.signer,
        QueueToken(
            claims.token_id, uuid.UUID(intruder.user_id), claims.queue_number, claims.expire_time
        ),
    )
    code = await _code(
        stubs.reservation.ReserveSeat(
            reservation_pb2.ReserveSeatRequest(date_id=world.date_id, seat_number=5),
            metadata=bearer(minted),
        )
    )
    assert code == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    await assert_invariants(app)


async def test_queue_calls_check_the_stored_token_against_the_claims(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    """RefreshToken, GetQueueStatus and WatchQueueStatus with claims signed with our key
    but naming another user for a real token id: refused, and the victim's row is
    neither extended nor re-signed for the intruder."""
    victim = await admitted_fan(stubs)
    claims = read_queue_token(app.ctx.signer, victim.token)
    assert claims is not None
    intruder = await new_fan(stubs)
    # An expiry soon, so that GetQueueStatus cannot answer from memory and reads the row.
    soon = app.ctx.clock.now() + (claims.expire_time - app.ctx.clock.now()) / 20
    minted = sign_queue_token(
        app.ctx.signer,
        QueueToken(claims.token_id, uuid.UUID(intruder.user_id), claims.queue_number, soon),
    )
    before = await _token_expiry(app, claims.token_id)
    clock.advance(60)  # a refresh would now move the expiry
    refused = (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert (
        await _code(
            stubs.queue.RefreshToken(queue_pb2.RefreshTokenRequest(), metadata=bearer(minted))
        )
        == refused
    )
    assert (
        await _code(
            stubs.queue.GetQueueStatus(queue_pb2.GetQueueStatusRequest(), metadata=bearer(minted))
        )
        == refused
    )
    stream = stubs.queue.WatchQueueStatus(
        queue_pb2.WatchQueueStatusRequest(), metadata=bearer(minted)
    )
    assert await _code(stream.read()) == refused
    assert await _token_expiry(app, claims.token_id) == before
    # The victim's own credential still works.
    reply = await stubs.queue.RefreshToken(
        queue_pb2.RefreshTokenRequest(), metadata=bearer(victim.token)
    )
    assert reply.status.state == queue_pb2.QUEUE_TOKEN_STATE_ADMITTED


async def _token_expiry(app: App, token_id: uuid.UUID) -> object:
    async with app.ctx.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT expires_at FROM queue_tokens WHERE id = %s", (token_id,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def test_a_paid_token_whose_notice_was_lost_is_refused_once_the_listener_reconnects(
    app: App, stubs: Stubs
) -> None:
    """A payment's NOTIFY sent while this process's LISTEN connection was down is lost:
    the reconnect re-reads the used-up tokens, so the gate refuses the token then."""
    fan = await admitted_fan(stubs)
    claims = read_queue_token(app.ctx.signer, fan.token)
    assert claims is not None
    list_concerts = concert_pb2.ListConcertsRequest()
    async with app.ctx.pool.connection() as conn:
        # Used up by "another process" whose notice never arrives here.
        await conn.execute(
            "UPDATE queue_tokens SET state = 'completed', ended_at = %s WHERE id = %s",
            (app.ctx.clock.now(), claims.token_id),
        )
        await stubs.concert.ListConcerts(list_concerts, metadata=bearer(fan.token))
        # Every other connection to the database is cut, the listener's among them.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    await app.ctx.pool.check()  # the pool's own connections: replaced
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        code = await _code(stubs.concert.ListConcerts(list_concerts, metadata=bearer(fan.token)))
        if code != (grpc.StatusCode.OK, None) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert code == (grpc.StatusCode.FAILED_PRECONDITION, "TOKEN_COMPLETED")


async def test_a_paid_token_is_refused_after_a_restart(
    app: App, stubs: Stubs, database_url: str
) -> None:
    world = await booked_world(app, stubs)  # its fan paid: the token is used up
    async with (
        running_app(app.ctx.settings, database_url, app.ctx.clock) as again,
        grpc.aio.insecure_channel(again.address) as channel,
    ):
        code = await _code(
            Stubs.on(channel).concert.ListConcerts(
                concert_pb2.ListConcertsRequest(), metadata=world.fan.metadata
            )
        )
    assert code == (grpc.StatusCode.FAILED_PRECONDITION, "TOKEN_COMPLETED")
