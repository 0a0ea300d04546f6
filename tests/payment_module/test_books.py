"""The reconciliation between the server's books and the payment module's, in
the product: the module's ListPayments, the server's books job
(module-books-reconciliation) and `check-books`, over real PostgreSQL (a
database each) with the module and the server in-process on one FakeClock.

Each corruption is planted by editing the module's rows, as a crash at the
wrong moment would leave them, and each is seen settled or reported."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from paymentmodule.v1 import payment_module_pb2 as pm
from paymentmodule.v1 import payment_module_pb2_grpc

from concert.v1 import reservation_pb2
from server import base64url
from server.app import App
from server.booking.install import BOOKS_JOB
from server.booking.module_auth import ModuleSecrets
from server.booking.module_client import module_clients
from server.clock import FakeClock
from server.config import Settings
from server.invariants import MODULE_CHARGE_SETTLED, MODULE_PAYMENT_BACKED, Report, check_books
from server.module_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, list_text, mac
from server.payment_module.app import ModuleApp, build_module_app
from server.payment_module.settings import ModuleSettings
from tests.booking.helpers import make_concert
from tests.e2e.servers import REPOSITORY
from tests.fans import admitted_fan
from tests.payment_module.processes import check_books as check_books_in_tests
from tests.payment_modules import MODULE, SECRET, running_module
from tests.support import Stubs, error_details, free_port

PRICE = 1_000
GOOD_CARD = "4242424242424242"
Stub = payment_module_pb2_grpc.PaymentModuleServiceStub


@pytest.fixture
def module_port() -> int:
    return free_port()


@pytest.fixture
def secrets_with_address(tmp_path: Path, module_port: int) -> Path:
    """The secrets file, the module's line naming where the server reaches it."""
    path = tmp_path / "payment-modules"
    path.write_text(f"{MODULE} {base64url.encode(SECRET)} 127.0.0.1:{module_port}\n")
    return path


@pytest.fixture
def settings(settings: Settings, secrets_with_address: Path) -> Settings:
    return settings.replace(payment_module_secrets_file=secrets_with_address)


@pytest.fixture
def module_db(create_database: Callable[[], str]) -> str:
    return create_database()


@pytest.fixture
async def module(
    app: App, module_db: str, module_port: int, secrets_with_address: Path, clock: FakeClock
) -> AsyncIterator[ModuleApp]:
    """The module reporting to the in-process server, on its FakeClock; no
    background dispatcher (the tests send callbacks with run_due)."""
    settings = ModuleSettings(
        listen=f"127.0.0.1:{module_port}",
        server_address=app.address,
        module_id=MODULE,
        secret_file=secrets_with_address,
        slow_card_ms=0,
    )
    async with running_module(settings, module_db, clock, seed=5) as module:
        yield module


@pytest.fixture
async def stub(module: ModuleApp) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(module.address) as channel:
        yield Stub(channel)


async def held_seat(app: App, stubs: Stubs) -> tuple[str, str]:
    """(reservation id, the fan's session token) of a fresh fan's held seat."""
    concert = await make_concert(app.ctx, seats=1, price=PRICE)
    fan = await admitted_fan(stubs)
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
        metadata=fan.metadata,
    )
    return held.reservation.reservation_id, fan.session_token


async def pay_at_module(
    stub: Stub, reservation_id: str, session_token: str, **source: str
) -> pm.ModulePayment:
    reply = await stub.PayReservation(
        pm.PayReservationRequest(
            request_id=str(uuid.uuid4()),
            reservation_id=reservation_id,
            amount=PRICE,
            session_token=session_token,
            **(source or {"card_number": GOOD_CARD}),
        )
    )
    return reply.payment


async def module_payment(stub: Stub, payment_id: str) -> pm.ModulePayment:
    reply = await stub.GetModulePayment(pm.GetModulePaymentRequest(payment_id=payment_id))
    return reply.payment


async def run_books(app: App) -> dict[str, int]:
    run = await app.ctx.jobs.run_now(BOOKS_JOB)
    assert run.ran
    return dict(run.result)


async def books_report(app: App, database_url: str) -> Report:
    secrets = ModuleSecrets.from_file(app.ctx.settings.payment_module_secrets_file)
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        module_clients(secrets, app.ctx.clock) as clients,
    ):
        return await check_books(
            conn,
            clients,
            app.ctx.clock.now(),
            interval=timedelta(seconds=app.ctx.settings.expiry_interval_seconds),
        )


def verdicts(report: Report) -> dict[str, tuple[int, int]]:
    """{rule: (checked, violating)}."""
    return {f.invariant.name: (f.checked, f.violations) for f in report.findings}


async def execute(url: str, query: str, *params: object) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query, params)


def stamp(moment: object) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)  # type: ignore[arg-type]
    return result


# --- the module's ListPayments ------------------------------------------------------


def signed(
    clock: FakeClock, request: pm.ListPaymentsRequest, secret: bytes = SECRET
) -> tuple[tuple[str, str], ...]:
    def micros(field: str) -> int | None:
        if not request.HasField(field):
            return None
        value = getattr(request, field)
        return int(value.seconds * 1_000_000 + value.nanos // 1000)

    timestamp = int(clock.now().timestamp())
    text = list_text(
        MODULE,
        timestamp,
        micros("start_time"),
        micros("end_time"),
        request.page_size,
        request.page_token,
    )
    return ((TIMESTAMP_HEADER, str(timestamp)), (SIGNATURE_HEADER, mac(secret, text)))


async def test_list_payments_pages_a_window_for_the_merchant_only(
    stub: Stub, clock: FakeClock
) -> None:
    start = clock.now()
    taken = []
    for _ in range(5):  # one a second, declines included
        taken.append(await pay_at_module(stub, str(uuid.uuid4()), "a-session"))
        clock.advance(1)
    taken.append(
        await pay_at_module(stub, str(uuid.uuid4()), "a-session", card_number="4000000000000002")
    )
    request = pm.ListPaymentsRequest(page_size=2)
    request.start_time.CopyFrom(stamp(start + timedelta(seconds=1)))  # the first one is out
    pages = []
    while True:
        reply = await stub.ListPayments(request, metadata=signed(clock, request))
        pages.append([p.payment_id for p in reply.payments])
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert pages == [
        [taken[1].payment_id, taken[2].payment_id],
        [taken[3].payment_id, taken[4].payment_id],
        [taken[5].payment_id],
    ]
    window = pm.ListPaymentsRequest(page_size=3)
    window.start_time.CopyFrom(stamp(start))
    window.end_time.CopyFrom(stamp(start + timedelta(seconds=2)))
    reply = await stub.ListPayments(window, metadata=signed(clock, window))
    assert [p.payment_id for p in reply.payments] == [t.payment_id for t in taken[:2]]
    assert reply.next_page_token == ""

    # Only the merchant reads the book; a token is for its own window.
    for metadata in ((), signed(clock, window, secret=b"not the module's secret")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListPayments(window, metadata=metadata)
        details = error_details(caught.value)
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "MODULE_SIGNATURE_INVALID",
        )
    first = pm.ListPaymentsRequest(page_size=1)  # no window
    other_windows_token = await stub.ListPayments(first, metadata=signed(clock, first))
    window.page_token = other_windows_token.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListPayments(window, metadata=signed(clock, window))
    assert error_details(caught.value).bad_fields == {"page_token"}
    backwards = pm.ListPaymentsRequest(page_size=-1)
    backwards.start_time.CopyFrom(stamp(start))
    backwards.end_time.CopyFrom(stamp(start))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListPayments(backwards, metadata=signed(clock, backwards))
    assert error_details(caught.value).bad_fields == {"end_time", "page_size"}


def test_the_secrets_file_takes_an_optional_address(tmp_path: Path) -> None:
    path = tmp_path / "modules"
    secret = base64url.encode(SECRET)
    path.write_text(f"# modules\nold {secret}\n\nnew {secret} 127.0.0.1:50061\n")
    secrets = ModuleSecrets.from_file(path)
    assert secrets.secrets == {"old": SECRET, "new": SECRET}
    assert secrets.addresses == {"new": "127.0.0.1:50061"}
    for line in (f"m {secret} nowhere", f"m {secret} 127.0.0.1:1 extra", "m not-base64!"):
        path.write_text(line + "\n")
        with pytest.raises(ValueError, match=":1: expected '<module id> <base64url secret>"):
            ModuleSecrets.from_file(path)


# --- the books job and check-books --------------------------------------------------


async def test_a_refund_the_module_never_made_is_made_by_the_job(
    app: App,
    stubs: Stubs,
    module: ModuleApp,
    stub: Stub,
    module_db: str,
    database_url: str,
    clock: FakeClock,
    settings: Settings,
) -> None:
    """The server answered REFUND (the hold had lapsed); the module crashed
    before refunding and lost the callback's row. Only the job can settle it."""
    reservation_id, session = await held_seat(app, stubs)
    await stub.TopUp(pm.TopUpRequest(account_id="late", amount=PRICE, request_id=str(uuid.uuid4())))
    taken = await pay_at_module(stub, reservation_id, session, account_id="late")
    clock.advance(settings.hold_ttl_seconds + 1)
    assert await module.dispatcher.run_due() == 1  # the server answers REFUND
    await execute(  # ... which the module never applied
        module_db,
        "UPDATE payments SET state = 'succeeded', server_answer = 'pending', refunded_at = NULL,"
        " refund_reason = NULL, answered_at = NULL WHERE payment_id = %s",
        taken.payment_id,
    )
    await execute(module_db, "UPDATE accounts SET balance = 0 WHERE account_id = 'late'")
    assert (await module_payment(stub, taken.payment_id)).state == pm.MODULE_PAYMENT_STATE_SUCCEEDED
    assert verdicts(await books_report(app, database_url))[MODULE_CHARGE_SETTLED.name] == (1, 1)

    # The module down: the run reads nothing, changes nothing, and says so.
    await module.server.stop(0)
    assert await run_books(app) == {"unreachable": 1}
    restarted = await build_module_app(
        module.settings, database_url=module_db, clock=clock, dispatch=False
    )
    await restarted.start()
    try:
        assert await run_books(app) == {"listed": 1, "refunded": 1}
        refunded = await module_payment(stub, taken.payment_id)
        assert (refunded.state, refunded.refund_reason) == (
            pm.MODULE_PAYMENT_STATE_REFUNDED,
            "REFUND_REQUESTED",
        )
        balance = await stub.GetBalance(pm.GetBalanceRequest(account_id="late"))
        assert balance.balance == PRICE
        assert await run_books(app) == {}  # settled: nothing more to do
        assert verdicts(await books_report(app, database_url)) == {
            MODULE_CHARGE_SETTLED.name: (1, 0),
            MODULE_PAYMENT_BACKED.name: (0, 0),
        }
        assert check_books_in_tests(module_db, database_url) == []
    finally:
        await restarted.stop(grace=0.5)


async def test_a_charge_never_reported_is_an_anomaly_after_one_interval_and_not_before(
    app: App,
    stubs: Stubs,
    module: ModuleApp,
    stub: Stub,
    module_db: str,
    database_url: str,
    clock: FakeClock,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reservation_id, session = await held_seat(app, stubs)
    taken = await pay_at_module(stub, reservation_id, session)  # the callback is not sent
    interval = settings.expiry_interval_seconds
    gauge = "concert_module_books_unreported_charges"
    created = taken.create_time.ToDatetime(tzinfo=UTC)
    for seconds in (0, interval - 1):  # not yet one interval
        clock.set(created + timedelta(seconds=seconds))
        assert await run_books(app) == {}, seconds
        assert app.ctx.metrics.registry.get_sample_value(gauge) == 0
        assert verdicts(await books_report(app, database_url))[MODULE_CHARGE_SETTLED.name] == (1, 0)
    clock.advance(1)  # one interval since the charge
    with caplog.at_level(logging.WARNING, logger="server.booking.module_books"):
        assert await run_books(app) == {"listed": 1, "unreported": 1}
    assert any(
        taken.payment_id in record.getMessage() and "never reported" in record.getMessage()
        for record in caplog.records
    )
    assert app.ctx.metrics.registry.get_sample_value(gauge) == 1
    report = await books_report(app, database_url)
    assert verdicts(report)[MODULE_CHARGE_SETTLED.name] == (1, 1)
    assert f"{MODULE}/{taken.payment_id} unreported" in str(report)
    # The job records nothing: the module's outbox delivers, and then all is settled.
    assert (await module_payment(stub, taken.payment_id)).server_answer == pm.SERVER_ANSWER_PENDING
    assert await module.dispatcher.run_due() == 1
    assert (await module_payment(stub, taken.payment_id)).server_answer == pm.SERVER_ANSWER_PAID
    assert await run_books(app) == {}
    assert app.ctx.metrics.registry.get_sample_value(gauge) == 0
    assert (await books_report(app, database_url)).ok
    assert check_books_in_tests(module_db, database_url) == []


async def test_a_payment_the_module_refunded_is_reported_as_both(
    app: App,
    stubs: Stubs,
    module: ModuleApp,
    stub: Stub,
    module_db: str,
    database_url: str,
    secrets_with_address: Path,
) -> None:
    reservation_id, session = await held_seat(app, stubs)
    taken = await pay_at_module(stub, reservation_id, session)
    assert await module.dispatcher.run_due() == 1  # PAID: the seat is sold
    assert (await books_report(app, database_url)).ok
    assert await run_books(app) == {}
    await execute(
        module_db,
        "UPDATE payments SET state = 'refunded', server_answer = 'refund',"
        " refunded_at = created_at, refund_reason = 'PLANTED' WHERE payment_id = %s",
        taken.payment_id,
    )
    assert await run_books(app) == {"listed": 1, "both": 1}
    assert app.ctx.metrics.registry.get_sample_value("concert_module_books_both") == 1
    report = await books_report(app, database_url)
    assert verdicts(report) == {
        MODULE_CHARGE_SETTLED.name: (1, 1),
        MODULE_PAYMENT_BACKED.name: (1, 1),
    }
    assert f"{MODULE}/{taken.payment_id} both" in str(report)

    # The command says the same, and exits 1 (it signs with the system clock,
    # which the FakeClock started from).
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONCERT_")}
    env.update(
        CONCERT_DATABASE_URL=database_url,
        CONCERT_PAYMENT_MODULE_SECRETS_FILE=str(secrets_with_address),
    )
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "check-books",
        cwd=REPOSITORY,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await command.communicate()
    text = output.decode()
    assert command.returncode == 1, text
    assert f"VIOLATED {MODULE_CHARGE_SETTLED.name}" in text
    assert "0 books invariant(s) hold, 2 violated" in text

    # A payment the server holds that the module has no charge for at all.
    await execute(module_db, "DELETE FROM callback_outbox WHERE payment_id = %s", taken.payment_id)
    await execute(module_db, "DELETE FROM payments WHERE payment_id = %s", taken.payment_id)
    report = await books_report(app, database_url)
    assert verdicts(report) == {
        MODULE_CHARGE_SETTLED.name: (0, 0),
        MODULE_PAYMENT_BACKED.name: (1, 1),
    }
    assert "not in the module's book" in str(report)
