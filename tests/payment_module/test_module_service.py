"""The sandbox payment module in-process, over a real PostgreSQL database of its
own: balances, payments, declines, idempotency, concurrency, the callback's
backoff under a FakeClock, refunds; and its callbacks answered by a real
in-process concert server sharing that clock (a hold lapsed by moving it)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from paymentmodule.v1 import payment_module_pb2 as pm
from paymentmodule.v1 import payment_module_pb2_grpc

from concert.v1 import reservation_pb2
from server.app import App
from server.clock import FakeClock
from server.config import Settings
from server.module_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, mac, refund_text
from server.payment_module.app import ModuleApp, build_module_app
from server.payment_module.settings import ModuleSettings
from tests.booking.helpers import make_concert
from tests.fans import admitted_fan
from tests.payment_module.processes import check_books
from tests.payment_modules import MODULE, SECRET, running_module, secrets_file
from tests.reliability.helpers import assert_invariants
from tests.support import Stubs, error_details, free_port

PRICE = 1_000
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
SLOW_CARD = "4000000000000077"
Stub = payment_module_pb2_grpc.PaymentModuleServiceStub


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(payment_module_secrets_file=secrets_file(tmp_path))


def module_settings(tmp_path: Path, server_address: str, **changes: object) -> ModuleSettings:
    defaults: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "server_address": server_address,
        "module_id": MODULE,
        "secret_file": secrets_file(tmp_path),
        "retry_base_ms": 1000,
        "retry_max_ms": 8000,
        "callback_timeout_ms": 2000,
        "slow_card_ms": 0,
    }
    defaults.update(changes)
    return ModuleSettings(**defaults)  # type: ignore[arg-type]


@pytest.fixture
def module_db(create_database: Callable[[], str]) -> str:
    return create_database()


@pytest.fixture
async def module(module_db: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[ModuleApp]:
    """The module with no server behind it (nothing listens at its server address),
    no background dispatcher: tests run dispatcher passes themselves."""
    settings = module_settings(tmp_path, f"127.0.0.1:{free_port()}")
    async with running_module(settings, module_db, clock) as app:
        yield app


@pytest.fixture
async def stub(module: ModuleApp) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(module.address) as channel:
        yield Stub(channel)


def pay(reservation: str | None = None, **source: str) -> pm.PayReservationRequest:
    return pm.PayReservationRequest(
        request_id=str(uuid.uuid4()),
        reservation_id=reservation or str(uuid.uuid4()),
        amount=PRICE,
        session_token="a-fans-session-token",
        **source,
    )


async def top_up(stub: Stub, account: str, amount: int) -> int:
    reply = await stub.TopUp(
        pm.TopUpRequest(account_id=account, amount=amount, request_id=str(uuid.uuid4()))
    )
    return reply.balance


async def balance(stub: Stub, account: str) -> int:
    return (await stub.GetBalance(pm.GetBalanceRequest(account_id=account))).balance


async def outbox_due(url: str, payment_id: str) -> object:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT next_attempt_at FROM callback_outbox WHERE payment_id = %s", (payment_id,)
        )
        row = await cursor.fetchone()
    return row[0] if row else None


# --- balances and payments ---------------------------------------------------------


async def test_a_top_up_retried_adds_once_and_a_reused_id_is_refused(stub: Stub) -> None:
    request = pm.TopUpRequest(
        account_id="fan@example.com", amount=700, request_id=str(uuid.uuid4())
    )
    assert (await stub.TopUp(request)).balance == 700
    assert (await stub.TopUp(request)).balance == 700
    assert await balance(stub, "fan@example.com") == 700
    request.amount = 800
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.TopUp(request)
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    assert details.info is not None and details.info.domain == "paymentmodule.v1"
    assert await balance(stub, "fan@example.com") == 700
    assert await balance(stub, "nobody") == 0


async def test_bad_input_names_every_field_and_writes_nothing(stub: Stub, module_db: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PayReservation(
            pm.PayReservationRequest(
                request_id="not-a-uuid", reservation_id="", amount=-5, card_number="1234"
            )
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_fields == {
        "request_id",
        "reservation_id",
        "amount",
        "session_token",
        "card_number",
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PayReservation(pay())  # no source
    assert error_details(caught.value).bad_fields == {"account_id"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.TopUp(pm.TopUpRequest(account_id="a b", amount=0))
    assert error_details(caught.value).bad_fields == {"account_id", "amount", "request_id"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetModulePayment(pm.GetModulePaymentRequest(payment_id=str(uuid.uuid4())))
    assert error_details(caught.value).reason == "PAYMENT_NOT_FOUND"
    async with await psycopg.AsyncConnection.connect(module_db) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM payments) + (SELECT count(*) FROM accounts)"
        )
        assert await cursor.fetchone() == (0,)


async def test_declines_take_nothing_and_call_nobody(
    stub: Stub, module: ModuleApp, module_db: str
) -> None:
    declined = (await stub.PayReservation(pay(card_number=DECLINED_CARD))).payment
    assert (declined.state, declined.decline_reason) == (
        pm.MODULE_PAYMENT_STATE_DECLINED,
        "CARD_DECLINED",
    )
    assert declined.server_answer == pm.SERVER_ANSWER_NOT_REPORTED
    await top_up(stub, "short", PRICE - 1)
    poor = (await stub.PayReservation(pay(account_id="short"))).payment
    assert poor.decline_reason == "INSUFFICIENT_FUNDS"
    assert await balance(stub, "short") == PRICE - 1
    assert (
        await stub.PayReservation(pay(account_id="never-topped-up"))
    ).payment.decline_reason == ("INSUFFICIENT_FUNDS")
    assert await module.dispatcher.run_due() == 0
    assert await outbox_due(module_db, declined.payment_id) is None


async def test_a_configured_decline_rate_declines(
    module_db: str, tmp_path: Path, clock: FakeClock
) -> None:
    app = await build_module_app(
        module_settings(tmp_path, "127.0.0.1:1", decline_percent=100),
        database_url=module_db,
        clock=clock,
        dispatch=False,
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            reply = await Stub(channel).PayReservation(pay(card_number=GOOD_CARD))
        assert reply.payment.decline_reason == "SANDBOX_DECLINE"
    finally:
        await app.stop(grace=0.5)


async def test_the_slow_card_and_the_delay_wait_before_deciding(
    module_db: str, tmp_path: Path, clock: FakeClock
) -> None:
    app = await build_module_app(
        module_settings(tmp_path, "127.0.0.1:1", delay_ms=250, slow_card_ms=4000),
        database_url=module_db,
        clock=clock,
        dispatch=False,
    )
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    app.payments.sleep = record
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            slow = (await Stub(channel).PayReservation(pay(card_number=SLOW_CARD))).payment
            await Stub(channel).PayReservation(pay(card_number=GOOD_CARD))
        assert slow.state == pm.MODULE_PAYMENT_STATE_SUCCEEDED
        assert waits == [4.25, 0.25]
    finally:
        await app.stop(grace=0.5)


async def test_a_fan_whose_call_to_the_slow_module_timed_out_retries_and_pays_once(
    module_db: str, tmp_path: Path, clock: FakeClock
) -> None:
    """The module slow when the fan pays: the fan's deadline passes while the
    module is still deciding; the fan retries with the same request id and is
    charged once, with one callback queued (whatever became of the first
    attempt, the request id makes it the same payment)."""
    app = await build_module_app(
        module_settings(tmp_path, "127.0.0.1:1", slow_card_ms=4000),
        database_url=module_db,
        clock=clock,
        dispatch=False,
    )
    released = asyncio.Event()
    deciding: list[float] = []

    async def slow_until_released(seconds: float) -> None:
        deciding.append(seconds)
        if len(deciding) == 1:
            await released.wait()  # the first attempt outlives the fan's deadline

    app.payments.sleep = slow_until_released
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = Stub(channel)
            request = pay(card_number=SLOW_CARD)
            with pytest.raises(grpc.aio.AioRpcError) as timed_out:
                await stub.PayReservation(request, timeout=0.3)
            assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            released.set()
            retried = (await stub.PayReservation(request)).payment
            again = (await stub.PayReservation(request)).payment
        assert retried.state == pm.MODULE_PAYMENT_STATE_SUCCEEDED
        assert again.payment_id == retried.payment_id
        async with await psycopg.AsyncConnection.connect(module_db) as conn:
            for table in ("payments", "callback_outbox"):
                cursor = await conn.execute(f"SELECT count(*) FROM {table}")
                assert await cursor.fetchone() == (1,), table
    finally:
        await app.stop(grace=0.5)


async def test_the_module_down_when_the_fan_pays_takes_nothing(
    module_db: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Nothing listens: the fan's call fails UNAVAILABLE, and the module's book,
    once it is back, holds no payment."""
    address = f"127.0.0.1:{free_port()}"
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await Stub(channel).PayReservation(pay(card_number=GOOD_CARD), timeout=2)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    app = await build_module_app(
        module_settings(tmp_path, "127.0.0.1:1"),
        database_url=module_db,
        clock=clock,
        dispatch=False,
    )
    await app.start()
    try:
        async with await psycopg.AsyncConnection.connect(module_db) as conn:
            cursor = await conn.execute("SELECT count(*) FROM payments")
            assert await cursor.fetchone() == (0,)
    finally:
        await app.stop(grace=0.5)


async def test_twenty_identical_payments_at_once_take_the_money_once(
    stub: Stub, module_db: str
) -> None:
    await top_up(stub, "twins", 3 * PRICE)
    request = pay(account_id="twins")
    replies = await asyncio.gather(*(stub.PayReservation(request) for _ in range(20)))
    assert len({reply.payment.payment_id for reply in replies}) == 1
    assert await balance(stub, "twins") == 2 * PRICE
    async with await psycopg.AsyncConnection.connect(module_db) as conn:
        cursor = await conn.execute("SELECT count(*) FROM callback_outbox")
        assert await cursor.fetchone() == (1,)


async def test_payments_from_one_balance_at_once_never_overdraw_it(stub: Stub) -> None:
    await top_up(stub, "crowd", 7 * PRICE + 10)
    replies = await asyncio.gather(
        *(stub.PayReservation(pay(account_id="crowd")) for _ in range(30))
    )
    states = [reply.payment.state for reply in replies]
    assert states.count(pm.MODULE_PAYMENT_STATE_SUCCEEDED) == 7
    assert states.count(pm.MODULE_PAYMENT_STATE_DECLINED) == 23
    assert await balance(stub, "crowd") == 10


# --- the callback: backoff, answers, refunds ---------------------------------------


async def test_callbacks_back_off_exponentially_on_the_injected_clock(
    stub: Stub, module: ModuleApp, module_db: str, clock: FakeClock
) -> None:
    """Nothing listens at the server address: every attempt fails and the next
    one is scheduled in [cap/2, cap], cap doubling from 1 s; none is sent early."""
    payment = (await stub.PayReservation(pay(card_number=GOOD_CARD))).payment
    assert payment.server_answer == pm.SERVER_ANSWER_PENDING
    cap = timedelta(seconds=1)
    for attempt in range(1, 5):
        assert await module.dispatcher.run_due() == 1
        due = await outbox_due(module_db, payment.payment_id)
        assert isinstance(due, type(clock.now()))
        assert cap / 2 <= due - clock.now() <= cap, attempt
        clock.set(due - timedelta(milliseconds=1))
        assert await module.dispatcher.run_due() == 0  # not before its time
        clock.set(due)
        cap = min(cap * 2, timedelta(seconds=8))
    found = await stub.GetModulePayment(pm.GetModulePaymentRequest(payment_id=payment.payment_id))
    assert found.payment.callback_attempts == 4
    assert found.payment.server_answer == pm.SERVER_ANSWER_PENDING


def refund_metadata(
    clock: FakeClock, request: pm.RefundPaymentRequest, secret: bytes = SECRET
) -> tuple[tuple[str, str], ...]:
    timestamp = int(clock.now().timestamp())
    text = refund_text(MODULE, timestamp, request.payment_id, request.request_id)
    return ((TIMESTAMP_HEADER, str(timestamp)), (SIGNATURE_HEADER, mac(secret, text)))


async def test_refund_payment_is_the_merchants_and_idempotent(
    stub: Stub, module: ModuleApp, module_db: str, clock: FakeClock
) -> None:
    await top_up(stub, "refundee", PRICE)
    payment = (await stub.PayReservation(pay(account_id="refundee"))).payment
    request = pm.RefundPaymentRequest(payment_id=payment.payment_id, request_id=str(uuid.uuid4()))
    for metadata in ((), refund_metadata(clock, request, secret=b"x" * 32)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RefundPayment(request, metadata=metadata)
        assert error_details(caught.value).reason == "MODULE_SIGNATURE_INVALID"
    assert await balance(stub, "refundee") == 0
    for _ in range(2):  # the second call changes nothing and answers the same
        refunded = (
            await stub.RefundPayment(request, metadata=refund_metadata(clock, request))
        ).payment
        assert (refunded.state, refunded.refund_reason) == (
            pm.MODULE_PAYMENT_STATE_REFUNDED,
            "REFUND_REQUESTED",
        )
        assert await balance(stub, "refundee") == PRICE
    assert await outbox_due(module_db, payment.payment_id) is None  # no callback any more
    declined = (await stub.PayReservation(pay(card_number=DECLINED_CARD))).payment
    request = pm.RefundPaymentRequest(payment_id=declined.payment_id, request_id=str(uuid.uuid4()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RefundPayment(request, metadata=refund_metadata(clock, request))
    assert error_details(caught.value).reason == "PAYMENT_DECLINED"


async def held_reservation(app: App, stubs: Stubs) -> tuple[str, str]:
    """(reservation id, the fan's session token) of a fresh fan's held seat."""
    concert = await make_concert(app.ctx, seats=2, price=PRICE)
    fan = await admitted_fan(stubs)
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=concert.dates[0].date_id, seat_number=1),
        metadata=fan.metadata,
    )
    return held.reservation.reservation_id, fan.session_token


@pytest.fixture
async def module_for(
    module_db: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Callable[[App], object]]:
    """The module reporting to an in-process server, on the server's FakeClock."""
    apps: list[ModuleApp] = []

    async def start(server: App) -> ModuleApp:
        app = await build_module_app(
            module_settings(tmp_path, server.address),
            database_url=module_db,
            clock=clock,
            rng=random.Random(3),
            dispatch=False,
        )
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(grace=0.5)


async def test_the_server_keeps_a_held_seats_payment(
    app: App, stubs: Stubs, module_for: Callable[[App], object], module_db: str, database_url: str
) -> None:
    module = await module_for(app)  # type: ignore[misc]
    reservation_id, session = await held_reservation(app, stubs)
    async with grpc.aio.insecure_channel(module.address) as channel:
        taken = (
            await Stub(channel).PayReservation(
                pm.PayReservationRequest(
                    request_id=str(uuid.uuid4()),
                    reservation_id=reservation_id,
                    amount=PRICE,
                    session_token=session,
                    card_number=GOOD_CARD,
                )
            )
        ).payment
        assert await module.dispatcher.run_due() == 1
        paid = (
            await Stub(channel).GetModulePayment(
                pm.GetModulePaymentRequest(payment_id=taken.payment_id)
            )
        ).payment
    assert (paid.server_answer, paid.state) == (
        pm.SERVER_ANSWER_PAID,
        pm.MODULE_PAYMENT_STATE_SUCCEEDED,
    )
    assert paid.server_payment_id and paid.callback_attempts == 1
    assert check_books(module_db, database_url) == []
    await assert_invariants(app)


async def test_a_callback_after_the_hold_lapsed_is_refunded(
    app: App,
    stubs: Stubs,
    module_for: Callable[[App], object],
    module_db: str,
    database_url: str,
    clock: FakeClock,
    settings: Settings,
) -> None:
    module = await module_for(app)  # type: ignore[misc]
    reservation_id, session = await held_reservation(app, stubs)
    async with grpc.aio.insecure_channel(module.address) as channel:
        await top_up(Stub(channel), "late", PRICE)
        taken = (
            await Stub(channel).PayReservation(
                pm.PayReservationRequest(
                    request_id=str(uuid.uuid4()),
                    reservation_id=reservation_id,
                    amount=PRICE,
                    session_token=session,
                    account_id="late",
                )
            )
        ).payment
        assert await balance(Stub(channel), "late") == 0
        clock.advance(settings.hold_ttl_seconds + 1)  # the callback arrives after the hold lapsed
        assert await module.dispatcher.run_due() == 1
        refunded = (
            await Stub(channel).GetModulePayment(
                pm.GetModulePaymentRequest(payment_id=taken.payment_id)
            )
        ).payment
        assert (refunded.state, refunded.server_answer, refunded.refund_reason) == (
            pm.MODULE_PAYMENT_STATE_REFUNDED,
            pm.SERVER_ANSWER_REFUND,
            "RESERVATION_NOT_HELD",
        )
        assert await balance(Stub(channel), "late") == PRICE
    assert check_books(module_db, database_url) == []
    await assert_invariants(app)
