"""Signing keys carry an id and rotate; they can live outside the database.

- A rotated key is learned by every process before it signs; credentials signed
  with the previous key verify until they expire; keys no credential needs are
  retired by the next rotation.
- Credentials from before key ids (`payload.mac`, the database's one secret,
  now key "0") still verify.
- With CONCERT_SIGNING_KEYS_FILE the keys come from a file and the database
  holds none that signs.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import psycopg
import pytest

from concert.v1 import account_pb2, concert_pb2, queue_pb2
from server import base64url
from server.app import App, reload_signing_keys
from server.clock import FakeClock
from server.config import ConfigError, Settings
from server.signing import (
    KEY_ACTIVATION_DELAY,
    KEY_RELOAD_SECONDS,
    SigningKey,
    rotate_signing_key,
)
from tests.e2e.servers import REPOSITORY
from tests.fans import admitted_fan, new_fan
from tests.support import TEST_ADMIN_KEY, Stubs, bearer, error_details, running_app


@pytest.fixture
async def keys_restored(app: App) -> AsyncIterator[None]:
    """signing_keys outlives each test (tests/conftest.py): this test's keys do not."""
    yield
    async with app.ctx.pool.connection() as conn:
        await conn.execute("DELETE FROM signing_keys")  # the next server makes a fresh one


async def _issue(stubs: Stubs, session: str) -> grpc.aio.AioRpcError | queue_pb2.IssueTokenResponse:
    try:
        return await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=session))
    except grpc.aio.AioRpcError as err:
        return err


async def test_a_rotated_key_signs_after_every_process_knows_it_and_old_ones_retire(
    app: App, stubs: Stubs, clock: FakeClock, keys_restored: None
) -> None:
    fan = await new_fan(stubs)
    old_kid = fan.session_token.split(".")[0]
    keep_for = timedelta(seconds=app.ctx.settings.session_ttl_seconds)
    async with app.ctx.pool.connection() as conn:
        rotation = await rotate_signing_key(conn, clock, keep_for)
    assert rotation.active_from == clock.now() + KEY_ACTIVATION_DELAY

    # Known at once (verify), signing only once active.
    await reload_signing_keys(app.ctx)
    assert rotation.kid in app.ctx.signer.kids
    assert app.ctx.signer.current_kid == old_kid
    clock.advance(KEY_ACTIVATION_DELAY.total_seconds())
    await reload_signing_keys(app.ctx)
    signed_new = await stubs.account.SignIn(
        account_pb2.SignInRequest(email=fan.email, password=fan.password)
    )
    assert signed_new.session_token.split(".")[0] == rotation.kid
    # The old credential still works until it expires.
    assert isinstance(await _issue(stubs, fan.session_token), queue_pb2.IssueTokenResponse)

    # A process may have signed with the old key until its next re-read after the
    # new one activated: not retired while such a credential may still live...
    clock.advance(keep_for.total_seconds() + 1)
    async with app.ctx.pool.connection() as conn:
        sooner = await rotate_signing_key(conn, clock, keep_for)
    assert old_kid not in sooner.retired
    # ...and past every credential the old key signed, the next rotation retires it.
    clock.advance(KEY_RELOAD_SECONDS)
    async with app.ctx.pool.connection() as conn:
        later = await rotate_signing_key(conn, clock, keep_for)
    assert old_kid in later.retired and rotation.kid not in later.retired
    await reload_signing_keys(app.ctx)
    assert old_kid not in app.ctx.signer.kids


async def test_credentials_from_before_key_ids_verify_with_key_zero(
    app: App, stubs: Stubs, clock: FakeClock, keys_restored: None
) -> None:
    secret = b"s" * 32
    async with app.ctx.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO signing_keys (kid, secret, created_at, active_from)"
            " VALUES ('0', %s, %s, %s) ON CONFLICT (kid) DO UPDATE SET secret = EXCLUDED.secret",
            (secret, clock.now(), clock.now() - timedelta(days=1)),
        )
    await reload_signing_keys(app.ctx)
    fan = await admitted_fan(stubs)
    # The old form: base64url(payload).base64url(HMAC(key, purpose \\0 payload)).
    payload = base64url.decode(fan.token.split(".")[1])
    mac = hmac.new(secret, b"queue\0" + payload, hashlib.sha256).digest()
    legacy = f"{base64url.encode(payload)}.{base64url.encode(mac)}"
    await stubs.concert.ListConcerts(concert_pb2.ListConcertsRequest(), metadata=bearer(legacy))
    forged = f"{base64url.encode(payload)}.{base64url.encode(b'x' * 32)}"
    try:
        await stubs.concert.ListConcerts(concert_pb2.ListConcertsRequest(), metadata=bearer(forged))
    except grpc.aio.AioRpcError as err:
        assert error_details(err).reason == "TOKEN_INVALID"
    else:
        raise AssertionError("a legacy credential with a wrong MAC was accepted")


async def test_keys_from_a_file_sign_and_none_is_made_in_the_database(
    create_database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    keys_file = tmp_path / "signing-keys"
    keys_file.write_text(
        f"# the first line signs\nfile-b {base64url.encode(b'b' * 32)}\n"
        f"file-a {base64url.encode(b'a' * 32)}\n"
    )
    async with running_app(settings.replace(signing_keys_file=keys_file), url, clock) as app:
        async with grpc.aio.insecure_channel(app.address) as channel:
            fan = await new_fan(Stubs.on(channel), f"f-{uuid.uuid4().hex[:8]}@example.com")
        assert fan.session_token.split(".")[0] == "file-b"
        assert app.ctx.signer.kids == {"file-a", "file-b"}
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM signing_keys")
        assert await cursor.fetchone() == (0,)


async def test_keys_from_the_environment_sign_and_none_is_made_in_the_database(
    create_database, settings: Settings, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    variable = f"env-b {base64url.encode(b'b' * 32)}; env-a {base64url.encode(b'a' * 32)}"
    configured = Settings.from_env(
        {"CONCERT_SIGNING_KEYS": variable, "CONCERT_ADMIN_KEY": TEST_ADMIN_KEY}
    )
    assert configured.signing_keys_are_secret
    running = settings.replace(signing_keys=configured.signing_keys)
    async with running_app(running, url, clock) as app:
        async with grpc.aio.insecure_channel(app.address) as channel:
            fan = await new_fan(Stubs.on(channel), f"e-{uuid.uuid4().hex[:8]}@example.com")
        assert fan.session_token.split(".")[0] == "env-b"
        assert app.ctx.signer.kids == {"env-a", "env-b"}
        assert app.key_reload is None  # nothing to re-read from the database
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM signing_keys")
        assert await cursor.fetchone() == (0,)


async def test_a_malformed_signing_keys_variable_stops_the_start(
    create_database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    with pytest.raises(ConfigError, match="CONCERT_SIGNING_KEYS:1: expected") as raised:
        async with running_app(settings.replace(signing_keys="just-a-kid"), url, clock):
            pass
    assert "just-a-kid" not in str(raised.value)
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"a {base64url.encode(b'a' * 32)}\n")
    with pytest.raises(ConfigError, match="set one or neither"):
        Settings.from_env(
            {
                "CONCERT_SIGNING_KEYS": f"b {base64url.encode(b'b' * 32)}",
                "CONCERT_SIGNING_KEYS_FILE": str(keys_file),
            }
        )


def test_rotate_key_command(create_database) -> None:  # type: ignore[no-untyped-def]
    url = create_database()
    env = {"CONCERT_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "server", "rotate-key"],
            cwd=REPOSITORY,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs
    # On an empty database key "1" is made first, signing at once; the rotation adds "2".
    assert "signing key 2 added" in runs[0].stdout and "signing key 3 added" in runs[1].stdout


def test_a_key_set_needs_a_key_of_32_bytes() -> None:
    from datetime import UTC, datetime

    from server.signing import Signer

    signer = Signer()
    try:
        signer.use([SigningKey("1", b"short", datetime.now(UTC))])
    except ValueError as err:
        assert "32 bytes" in str(err)
    else:
        raise AssertionError("a short key was accepted")
