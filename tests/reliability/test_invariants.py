"""The invariant checker: it holds after real flows, and it catches each kind of corruption.

A checker that never fails proves nothing, so every invariant is shown
VIOLATED by a planted corruption of exactly the kind it exists to catch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from concert.v1 import queue_pb2
from server.app import App
from server.booking.install import HOLD_EXPIRY_JOB, RECONCILIATION_JOB
from server.invariants import INVARIANTS
from server.queue.expiry import JOB_NAME as TOKEN_EXPIRY_JOB
from tests.fans import new_fan
from tests.reliability.helpers import World, assert_invariants, booked_world, invariants
from tests.support import Stubs

Corruption = Callable[[App, Stubs, World], Awaitable[None]]


async def _sql(app: App, query: str, *params: object) -> None:
    async with app.ctx.pool.connection() as conn:
        await conn.execute(query, params)


async def _second_hold_on_the_sold_seat(app: App, stubs: Stubs, world: World) -> None:
    await _sql(
        app,
        "INSERT INTO reservations (id, user_id, concert_id, date_id, seat_number, price, state,"
        " created_at, expires_at) SELECT %s, user_id, concert_id, date_id, seat_number, price,"
        " 'held', %s, %s FROM reservations WHERE id = %s",
        uuid.uuid4(),
        app.ctx.clock.now(),
        app.ctx.clock.now() + timedelta(seconds=app.ctx.settings.hold_ttl_seconds),
        world.paid_reservation_id,
    )


async def _seat_forgets_its_hold(app: App, stubs: Stubs, world: World) -> None:
    await _sql(
        app,
        "UPDATE seats SET held_until = NULL, reservation_id = NULL WHERE reservation_id = %s",
        world.held_reservation_id,
    )


async def _sold_count_drifts(app: App, stubs: Stubs, world: World) -> None:
    await _sql(app, "UPDATE concert_dates SET sold_seat_count = 0 WHERE id = %s", world.date_id)


async def _payment_vanishes(app: App, stubs: Stubs, world: World) -> None:
    await _sql(app, "DELETE FROM payments WHERE id = %s", world.payment_id)


async def _module_payment_also_refunded(app: App, stubs: Stubs, world: World) -> None:
    """The payment, as if a module had reported it, also kept as a refund request."""
    await _sql(
        app,
        "UPDATE payments SET module_id = 'sandbox', module_payment_id = 'm-1' WHERE id = %s",
        world.payment_id,
    )
    await _sql(
        app,
        "INSERT INTO module_refund_requests (module_id, module_payment_id, amount, reason,"
        " created_at) VALUES ('sandbox', 'm-1', 1, 'AMOUNT_MISMATCH', now())",
    )


async def _balance_moves_without_ledger(app: App, stubs: Stubs, world: World) -> None:
    await _sql(
        app, "UPDATE wallets SET balance = balance + 1 WHERE user_id = %s", world.fan.user_id
    )


async def _refund_from_nowhere(app: App, stubs: Stubs, world: World) -> None:
    # Wallet and ledger agree with each other, but no charge was ever returned.
    await _sql(
        app,
        "WITH moved AS (UPDATE wallets SET balance = balance + 500 WHERE user_id = %s"
        " RETURNING user_id, balance) INSERT INTO wallet_ledger (user_id, amount, kind,"
        " balance_after, created_at) SELECT user_id, 500, 'refund', balance, %s FROM moved",
        world.fan.user_id,
        app.ctx.clock.now(),
    )


async def _charge_without_a_seat(app: App, stubs: Stubs, world: World) -> None:
    await _sql(
        app,
        "INSERT INTO gateway_charges (key, user_id, amount, state, created_at, updated_at)"
        " VALUES (%s, %s, 0, 'charged', %s, %s)",
        uuid.uuid4(),
        world.fan.user_id,
        app.ctx.clock.now(),
        app.ctx.clock.now(),
    )


async def _token_counted_twice(app: App, stubs: Stubs, world: World) -> None:
    await _sql(app, "UPDATE queue_state SET completed_count = completed_count + 1")


async def _lapse_not_counted(app: App, stubs: Stubs, world: World) -> None:
    await _sql(app, "UPDATE queue_state SET lapsed_waiting = lapsed_waiting + 1")


async def _window_reaches_too_far(app: App, stubs: Stubs, world: World) -> None:
    # The old arithmetic's overflow: the window moved past every free place.
    await _sql(
        app,
        "UPDATE queue_state SET window_limit = window_limit + capacity + 5, window_moved_at = %s",
        app.ctx.clock.now(),
    )


async def _admission_pass_stalls(app: App, stubs: Stubs, world: World) -> None:
    # A fan waits behind a window that stopped moving, with places free.
    fan = await new_fan(stubs)
    await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=fan.session_token))
    await _sql(
        app,
        "UPDATE queue_state SET window_limit = (SELECT max(queue_number) - 1 FROM queue_tokens),"
        " last_pass_at = %s",
        app.ctx.clock.now() - timedelta(seconds=10),
    )


async def _hold_expiry_job_stalls(app: App, stubs: Stubs, world: World) -> None:
    settings = app.ctx.settings
    app.ctx.clock.advance(settings.hold_ttl_seconds + settings.expiry_interval_seconds + 1)  # type: ignore[attr-defined]


async def _token_expiry_job_stalls(app: App, stubs: Stubs, world: World) -> None:
    fan = await new_fan(stubs)
    await stubs.queue.IssueToken(queue_pb2.IssueTokenRequest(session_token=fan.session_token))
    await app.ctx.jobs.run_now(HOLD_EXPIRY_JOB)  # only the token is left behind
    settings = app.ctx.settings
    app.ctx.clock.advance(settings.token_ttl_seconds + settings.expiry_interval_seconds + 1)  # type: ignore[attr-defined]
    await app.ctx.jobs.run_now(HOLD_EXPIRY_JOB)


CORRUPTIONS: dict[str, Corruption] = {
    "seat-claimed-once": _second_hold_on_the_sold_seat,
    "seat-row-agrees": _seat_forgets_its_hold,
    "sold-count-agrees": _sold_count_drifts,
    "sold-seat-paid-once": _payment_vanishes,
    "wallet-matches-ledger": _balance_moves_without_ledger,
    "money-conserved": _refund_from_nowhere,
    "charge-accounted": _charge_without_a_seat,
    "module-payment-settled-once": _module_payment_also_refunded,
    "token-counted-once": _token_counted_twice,
    "queue-lapses-counted": _lapse_not_counted,
    "queue-bounded": _window_reaches_too_far,
    "queue-live": _admission_pass_stalls,
    "hold-expiry-bounded": _hold_expiry_job_stalls,
    "token-expiry-bounded": _token_expiry_job_stalls,
    # one-live-token-per-user is also a unique index: the database refuses the
    # corruption itself, so there is nothing to plant.
}


def test_every_invariant_but_the_indexed_one_has_a_planted_corruption() -> None:
    names = {invariant.name for invariant in INVARIANTS}
    assert set(CORRUPTIONS) == names - {"one-live-token-per-user"}


async def test_invariants_hold_after_booking_paying_and_expiry(app: App, stubs: Stubs) -> None:
    await booked_world(app, stubs)
    report = await invariants(app)
    assert report.ok, str(report)
    checked = {f.invariant.name: f.checked for f in report.findings}
    assert checked["sold-seat-paid-once"] == 2  # the sold seat and its payment
    assert checked["token-counted-once"] == 1  # the paying fan's token
    # The clock passes the hold's expiry: the hold may linger one job interval...
    app.ctx.clock.advance(app.ctx.settings.hold_ttl_seconds + 1)  # type: ignore[attr-defined]
    await assert_invariants(app)
    # ...and the job tidies it within that interval.
    await app.ctx.jobs.run_now(HOLD_EXPIRY_JOB)
    await app.ctx.jobs.run_now(TOKEN_EXPIRY_JOB)
    await app.ctx.jobs.run_now(RECONCILIATION_JOB)
    app.ctx.clock.advance(app.ctx.settings.expiry_interval_seconds + 1)  # type: ignore[attr-defined]
    await assert_invariants(app)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
async def test_each_corruption_is_reported_violated(app: App, stubs: Stubs, name: str) -> None:
    world = await booked_world(app, stubs)
    await assert_invariants(app)
    await CORRUPTIONS[name](app, stubs, world)
    report = await invariants(app)
    violated = {f.invariant.name for f in report.violated}
    assert name in violated, str(report)
    line = next(line for line in report.lines() if f" {name}:" in line)
    assert line.startswith("VIOLATED") and "e.g." in line


def _check_command(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCERT_")}
    env["CONCERT_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "server", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_check_command_prints_each_invariant_and_fails_on_violation(
    app: App, stubs: Stubs, database_url: str
) -> None:
    world = await booked_world(app, stubs)
    clean = _check_command(database_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    for invariant in INVARIANTS:
        assert f"OK       {invariant.name}:" in clean.stdout
    assert f"{len(INVARIANTS)} invariant(s) hold, 0 violated" in clean.stdout

    await _balance_moves_without_ledger(app, stubs, world)
    broken = _check_command(database_url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "VIOLATED wallet-matches-ledger:" in broken.stdout
    assert world.fan.user_id in broken.stdout  # the example names the wallet
