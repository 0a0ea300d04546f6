"""Bad input: every method, arbitrary and boundary values, never UNKNOWN or INTERNAL.

Requests are generated from the protos' descriptors (every field of every
method, nested messages included) with hypothesis: empty, huge and non-ASCII
strings, real ids of this fan and of ANOTHER fan, malformed ids and page
tokens, int32/int64 extremes, out-of-range timestamps, unknown enum values;
and the call carries no credential, garbage, a forged, expired or wrong-purpose
token, a session, the operator's key or the fan's admitted token.

Hypothesis runs in a worker thread and sends each call to the event loop that
serves the app, so it can shrink a failing example to a minimal request.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from concert.v1 import (
    account_pb2,
    admin_pb2,
    concert_pb2,
    payment_callback_pb2,
    payment_pb2,
    queue_pb2,
    reservation_pb2,
    wallet_pb2,
)
from server.accounts.sessions import issue_session
from server.app import MAX_RECEIVE_BYTES, SERVICES, App
from server.queue.tokens import QueueToken, sign_queue_token
from server.validation import encode_page_token
from tests.fans import AdmittedFan, admitted_fan
from tests.payment_modules import module_metadata
from tests.reliability.helpers import assert_invariants, booked_world
from tests.support import ADMIN, Stubs, bearer, error_details
from tests.wire import varint

# Modest by default (CI runs the suite twice on 2 cores); the same examples on
# every run (derandomize) so CI never flakes. For a longer, random hunt:
# CONCERT_FUZZ_EXAMPLES=2000 CONCERT_FUZZ_RANDOM=1 scripts/test tests/reliability -k arbitrary
EXAMPLES_PER_METHOD = int(os.environ.get("CONCERT_FUZZ_EXAMPLES", "40"))
# The right credential of a payment module's callback: a signature over the
# request itself, so it is made per request (module_metadata).
SIGN_AS_MODULE = (("x-payment-module", "(signed per request)"),)
DERANDOMIZE = not os.environ.get("CONCERT_FUZZ_RANDOM")
# Each method's examples: run against the live server, so no deadline, no
# example database, and none of Hypothesis's health checks (they time the server).
PER_METHOD = settings(
    max_examples=EXAMPLES_PER_METHOD,
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)

METHODS: list[MethodDescriptor] = [method for service in SERVICES for method in service.methods]

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 2, 100, 1000, 10**9, 10**9 + 1, low, high) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _strings(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known),
        st.text(max_size=40),
        st.sampled_from(["", " ", "\x00", "null", "' OR 1=1 --", "x" * 5000, "\u00fc" * 60_000]),
    )


def message_strategy(
    descriptor: Descriptor, strings: st.SearchStrategy[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Arbitrary messages of this type: any subset of fields, each with hostile values."""
    cls = GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _field_value(field, strings, depth)
        if value is None:
            continue
        if field.is_repeated:
            value = st.lists(value, max_size=3)
        fields[field.name] = st.none() | value

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                getattr(message, name).extend(value)
            elif field.message_type is not None:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(fields).map(build)


def _field_value(
    field: FieldDescriptor, strings: st.SearchStrategy[str], depth: int
) -> st.SearchStrategy[Any] | None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return strings
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in _INT_RANGES:
        return _integers(*_INT_RANGES[kind])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.sampled_from([*numbers, 999, -1])
    if kind == FieldDescriptor.TYPE_MESSAGE:
        if depth >= 3:
            return None
        if field.message_type.full_name in (
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
        ):
            cls = GetMessageClass(field.message_type)
            return st.builds(
                lambda s, n: cls(seconds=s, nanos=n),
                _integers(-(2**63), 2**63 - 1),
                _integers(-(2**31), 2**31 - 1),
            )
        return message_strategy(field.message_type, strings, depth + 1)
    return None


@dataclass
class Hostile:
    """What the generated calls draw on: real ids of two fans, and credentials."""

    strings: list[str]
    credentials: list[tuple[tuple[str, str], ...] | None]
    fan: AdmittedFan

    def right_credential(self, method: MethodDescriptor) -> tuple[tuple[str, str], ...] | None:
        """What a well-behaved client of this method would present."""
        service = method.containing_service.name
        if service == "AccountService" or method.name == "IssueToken":
            return None
        if service == "AdminService":
            return ADMIN
        if service == "WalletService":
            return self.fan.session_metadata
        if service == "PaymentCallbackService":
            return SIGN_AS_MODULE  # signed per request, as a module signs its callbacks
        return self.fan.metadata


async def hostile_world(app: App, stubs: Stubs) -> Hostile:
    other = await booked_world(app, stubs)  # another fan: a payment, a sold and a held seat
    fan = await admitted_fan(stubs)  # the caller: no money, so a Pay is declined
    held = await stubs.reservation.ReserveSeat(
        reservation_pb2.ReserveSeatRequest(date_id=other.date_id, seat_number=3),
        metadata=fan.metadata,
    )
    concerts = await stubs.concert.ListConcerts(
        concert_pb2.ListConcertsRequest(), metadata=fan.metadata
    )
    now = app.ctx.clock.now()
    signer = app.ctx.signer
    expired_token = sign_queue_token(
        signer, QueueToken(uuid.uuid4(), uuid.UUID(fan.user_id), 1, now - timedelta(seconds=1))
    )
    expired_session, _ = issue_session(signer, uuid.UUID(fan.user_id), now - timedelta(days=2), 60)
    forged = fan.token[:-4] + ("AAAA" if not fan.token.endswith("AAAA") else "BBBB")
    strings = [
        fan.user_id,
        fan.email,
        fan.password,
        held.reservation.reservation_id,
        other.fan.user_id,
        other.fan.email,
        other.paid_reservation_id,
        other.held_reservation_id,
        other.payment_id,
        other.date_id,
        concerts.concerts[0].concert_id,
        str(uuid.uuid4()),
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        fan.token,
        fan.session_token,
        forged,
        encode_page_token({"t": "yesterday", "id": "x"}),
        encode_page_token({"d": other.date_id, "after": 2**70}),
        encode_page_token({"c": "x", "t": "2020-01-01", "id": str(uuid.uuid4())}),
        "eyJ9",
        "new-fan@example.com",
        "long enough password",
    ]
    credentials: list[tuple[tuple[str, str], ...] | None] = [
        None,
        bearer("garbage"),
        (("authorization", "Basic " + fan.token),),
        bearer("x" * 3000),
        bearer(forged),
        bearer(expired_token),
        bearer(expired_session),
        bearer(fan.session_token),  # a session where a token is wanted, and the reverse
        bearer(other.fan.session_token),
        ADMIN,
        ADMIN,
        bearer(fan.token),
    ]
    return Hostile(strings, credentials, fan)


def _top_level(field_path: str) -> str:
    return re.split(r"[.\[]", field_path, maxsplit=1)[0]


def check_reply(
    method: MethodDescriptor, request: Message, error: grpc.aio.AioRpcError | None
) -> None:
    """The rules every reply to any input obeys."""
    if error is None:
        return
    details = error_details(error)
    assert details.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
        f"{method.full_name} answered {details.code.name} ({details.message}) to {request!r}"
    )
    assert details.info is not None, f"{method.full_name}: {details.code.name} without ErrorInfo"
    if details.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert details.bad_fields, f"{method.full_name}: INVALID_ARGUMENT without BadRequest"
        known = {f.name for f in method.input_type.fields} | {
            o.name for o in method.input_type.oneofs
        }
        unknown = {f for f in details.bad_fields if _top_level(f) not in known}
        assert not unknown, f"{method.full_name}: BadRequest names no such field {unknown}"


def caller(channel: grpc.aio.Channel, method: MethodDescriptor) -> Callable[..., Any]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response = GetMessageClass(method.output_type)
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    return kind(
        path,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response.FromString,
    )


async def send(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: tuple[tuple[str, str], ...] | None,
) -> grpc.aio.AioRpcError | None:
    call = caller(channel, method)(request, metadata=metadata, timeout=20)
    return await _outcome(method, call)


async def _outcome(method: MethodDescriptor, call: Any) -> grpc.aio.AioRpcError | None:
    """The call's error, or None: a stream is read up to its first message (proof
    it opened), then hung up."""
    try:
        if method.server_streaming:
            async for _ in call:
                break
            call.cancel()
        else:
            await call
    except grpc.aio.AioRpcError as err:
        return err
    return None


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
async def test_arbitrary_requests_get_precise_errors_and_keep_the_invariants(
    app: App, stubs: Stubs, channel: grpc.aio.Channel, method: MethodDescriptor
) -> None:
    hostile = await hostile_world(app, stubs)
    loop = asyncio.get_running_loop()
    requests = message_strategy(method.input_type, _strings(hostile.strings))
    right = st.just(hostile.right_credential(method))

    @PER_METHOD
    @given(request=requests, metadata=st.one_of(right, right, st.sampled_from(hostile.credentials)))
    def property_holds(request: Message, metadata: Any) -> None:
        if metadata is SIGN_AS_MODULE:
            assert isinstance(request, payment_callback_pb2.ConfirmModulePaymentRequest)
            metadata = module_metadata(app.ctx.clock.now(), request)
        error = asyncio.run_coroutine_threadsafe(
            send(channel, method, request, metadata), loop
        ).result(timeout=60)
        check_reply(method, request, error)
        outcomes[error_details(error).code.name if error else "OK"] += 1

    outcomes: Counter[str] = Counter()
    await asyncio.to_thread(property_holds)
    # The calls reached the handlers, not only bounced off the credential checks.
    assert set(outcomes) - {"UNAUTHENTICATED", "PERMISSION_DENIED"}, outcomes
    await assert_invariants(app)


# Per method, a request whose every field is wrong, and the fields it must name.
EVERY_FIELD_WRONG: dict[str, tuple[Message, set[str]]] = {
    "SignUp": (
        account_pb2.SignUpRequest(email="no-at-sign", password="short", request_id="x"),
        {"email", "password", "request_id"},
    ),
    "SignIn": (account_pb2.SignInRequest(email="", password=""), {"email", "password"}),
    "IssueToken": (
        queue_pb2.IssueTokenRequest(password=queue_pb2.PasswordCredential(email="", password="")),
        {"password.email", "password.password"},
    ),
    "ListConcerts": (
        concert_pb2.ListConcertsRequest(page_size=-1, page_token="%%%"),
        {"page_size", "page_token"},
    ),
    "ListAvailableDates": (
        concert_pb2.ListAvailableDatesRequest(concert_id="x", page_size=-1, page_token="%%%"),
        {"concert_id", "page_size", "page_token"},
    ),
    "ListAvailableSeats": (
        concert_pb2.ListAvailableSeatsRequest(date_id="x", page_size=-1, page_token="%%%"),
        {"date_id", "page_size", "page_token"},
    ),
    "ReserveSeat": (
        reservation_pb2.ReserveSeatRequest(date_id="x", seat_number=0, request_id="x"),
        {"date_id", "seat_number", "request_id"},
    ),
    "GetReservation": (
        reservation_pb2.GetReservationRequest(reservation_id="x"),
        {"reservation_id"},
    ),
    "CancelReservation": (
        reservation_pb2.CancelReservationRequest(reservation_id="x", request_id="x"),
        {"reservation_id", "request_id"},
    ),
    "Pay": (
        payment_pb2.PayRequest(reservation_id="x", request_id="x"),
        {"reservation_id", "request_id"},
    ),
    "GetPayment": (payment_pb2.GetPaymentRequest(payment_id="x"), {"payment_id"}),
    "GetModulePayment": (
        payment_pb2.GetModulePaymentRequest(payment_module="", module_payment_id="m" * 129),
        {"payment_module", "module_payment_id"},
    ),
    "Charge": (
        wallet_pb2.ChargeRequest(user_id="x", amount=-1, request_id="x"),
        {"user_id", "amount", "request_id"},
    ),
    "GetBalance": (wallet_pb2.GetBalanceRequest(user_id="x"), {"user_id"}),
    "CreateConcert": (
        admin_pb2.CreateConcertRequest(title=" ", venue="v" * 201, request_id="x"),
        {"title", "venue", "dates", "request_id"},
    ),
    "SetAdmission": (admin_pb2.SetAdmissionRequest(capacity=-1), {"capacity"}),
    "ConfirmModulePayment": (
        payment_callback_pb2.ConfirmModulePaymentRequest(reservation_id="x", amount=-1),
        {"module_payment_id", "reservation_id", "amount", "session_token"},
    ),
}


def test_every_method_with_fields_has_an_every_field_wrong_case() -> None:
    with_fields = {m.name for m in METHODS if m.input_type.fields}
    assert set(EVERY_FIELD_WRONG) == with_fields


async def test_every_bad_field_is_named_in_one_reply(
    app: App, stubs: Stubs, channel: grpc.aio.Channel
) -> None:
    fan = await admitted_fan(stubs)
    for method in METHODS:
        if method.name not in EVERY_FIELD_WRONG:
            continue
        request, fields = EVERY_FIELD_WRONG[method.name]
        service = method.containing_service.name
        metadata = {
            "AdminService": ADMIN,
            "WalletService": ADMIN,
            "AccountService": None,
            "QueueService": None,
        }.get(service, fan.metadata)
        if service == "PaymentCallbackService":
            assert isinstance(request, payment_callback_pb2.ConfirmModulePaymentRequest)
            metadata = module_metadata(app.ctx.clock.now(), request)
        error = await send(channel, method, request, metadata)
        assert error is not None, method.name
        details = error_details(error)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, details.message)
        assert details.bad_fields == fields, method.name
    await assert_invariants(app)


async def test_a_request_over_the_size_cap_is_resource_exhausted(stubs: Stubs) -> None:
    huge = "a" * (MAX_RECEIVE_BYTES + 1024)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.account.SignUp(account_pb2.SignUpRequest(email=huge, password="x" * 10))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is unharmed and answers the next call.
    reply = await stubs.account.SignUp(
        account_pb2.SignUpRequest(email="after-huge@example.com", password="long enough pw")
    )
    assert reply.email == "after-huge@example.com"


def test_descriptor_pool_covers_every_service() -> None:
    # Guard: a new service added to the protos must be fuzzed too.
    names = {m.containing_service.name for m in METHODS}
    assert len(names) == 8, names


async def test_nul_characters_and_impossible_timestamps_are_named_not_internal(
    app: App, channel: grpc.aio.Channel
) -> None:
    # Found by the property test above: PostgreSQL text cannot hold NUL (it
    # failed the query: INTERNAL), and Timestamp.ToDatetime refuses nanos < 0.
    by_name = {m.name: m for m in METHODS}
    cases: list[tuple[str, Message, Any, set[str]]] = [
        (
            "SignUp",
            account_pb2.SignUpRequest(email="a\x00@example.com", password="long enough pw"),
            None,
            {"email"},
        ),
        (
            "SignIn",
            account_pb2.SignInRequest(email="a\x00@x.io", password="pw\x00"),
            None,
            {"email", "password"},
        ),
        (
            "CreateConcert",
            admin_pb2.CreateConcertRequest(
                title="t",
                dates=[
                    admin_pb2.ConcertDateSpec(
                        start_time=Timestamp(seconds=4_000_000_000, nanos=-1),
                        seats=[admin_pb2.SeatSpec(seat_number=1)],
                    ),
                    admin_pb2.ConcertDateSpec(
                        start_time=Timestamp(seconds=2**62),
                        seats=[admin_pb2.SeatSpec(seat_number=1)],
                    ),
                ],
            ),
            ADMIN,
            {"dates[0].start_time", "dates[1].start_time"},
        ),
        (
            "CreateConcert",
            admin_pb2.CreateConcertRequest(title="a\x00b", venue="\x00"),
            ADMIN,
            {"title", "venue"},
        ),
    ]
    for name, request, metadata, fields in cases:
        error = await send(channel, by_name[name], request, metadata)
        assert error is not None, name
        details = error_details(error)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT, (name, details.message)
        assert details.bad_fields == fields, name


PAGE_TOKEN_KEYS = ["t", "id", "c", "d", "after", "x"]

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["2026-12-01T00:00:00+00:00", "2026-12-01", str(uuid.uuid4())]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@settings(
    max_examples=EXAMPLES_PER_METHOD * 2,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.sampled_from(["concerts", "dates", "seats"]),
    keys=st.sets(st.sampled_from(PAGE_TOKEN_KEYS), min_size=1),
    values=st.lists(_JSON, min_size=6, max_size=6),
    real_ids=st.booleans(),
)
# Found by hand, answered INTERNAL before: `after: true` (a bool is an int to Python).
@example(
    which="seats", keys={"d", "after"}, values=[True, None, None, None, None, None], real_ids=True
)
# A naive time in a date cursor.
@example(
    which="dates",
    keys={"c", "t", "id"},
    values=[None, str(uuid.UUID(int=1)), "2026-12-01T00:00:00", None, None, None],
    real_ids=True,
)
# The ids themselves of another JSON type (c and d were always the real ids before).
@example(
    which="dates", keys={"c", "t", "id"}, values=[7, None, None, None, None, None], real_ids=False
)
@example(which="seats", keys={"d", "after"}, values=[1, [], None, None, None, None], real_ids=False)
@example(
    which="seats",
    keys={"d", "after"},
    values=[2, {"x": None}, None, None, None, None],
    real_ids=False,
)
async def test_page_tokens_of_every_json_type_are_invalid_argument_never_internal(
    stubs: Stubs,
    page_world: tuple[str, str, AdmittedFan],
    which: str,
    keys: set[str],
    values: list[Any],
    real_ids: bool,
) -> None:
    """A page token is the client's to edit: every JSON type in every field, and
    the right keys with the wrong types, are INVALID_ARGUMENT (or a page), never
    a value that reaches SQL."""
    concert_id, date_id, fan = page_world
    position = dict(zip(sorted(keys), values, strict=False))
    # Half the time, the very ids the method would accept, beside the hostile
    # values; the other half, c and d get hostile values like every other key.
    if real_ids:
        position.update({k: v for k, v in (("c", concert_id), ("d", date_id)) if k in keys})
    token = encode_page_token(position)
    if which == "concerts":
        call = stubs.concert.ListConcerts(
            concert_pb2.ListConcertsRequest(page_token=token), metadata=fan.metadata
        )
    elif which == "dates":
        call = stubs.concert.ListAvailableDates(
            concert_pb2.ListAvailableDatesRequest(concert_id=concert_id, page_token=token),
            metadata=fan.metadata,
        )
    else:
        call = stubs.concert.ListAvailableSeats(
            concert_pb2.ListAvailableSeatsRequest(date_id=date_id, page_token=token),
            metadata=fan.metadata,
        )
    try:
        await call
    except grpc.aio.AioRpcError as err:
        details = error_details(err)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT, (position, details.message)
        assert details.bad_fields == {"page_token"}


@pytest.fixture
async def page_world(app: App, stubs: Stubs) -> tuple[str, str, AdmittedFan]:
    world = await booked_world(app, stubs)
    fan = await admitted_fan(stubs)  # the world's fan paid: its token is used up
    concerts = await stubs.concert.ListConcerts(
        concert_pb2.ListConcertsRequest(), metadata=fan.metadata
    )
    return concerts.concerts[0].concert_id, world.date_id, fan


# Raw bodies with invalid UTF-8 in a string field. The messages above are
# serialized from Python strings, which are always valid UTF-8; these are not:
# a well-formed request of the method, with one string field (at any depth)
# holding bytes that are not UTF-8, spliced into its wire format.
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
INVALID_UTF8_SEQUENCES = [
    b"\xff",  # never in UTF-8
    b"\xfe\xff",  # a UTF-16 byte order mark
    b"\x80",  # a continuation byte alone
    b"\xc3",  # a lead byte without its continuation
    b"\xe2\x82",  # a three-byte sequence cut short
    b"\xc0\xaf",  # an overlong '/'
    b"\xe0\x80\xaf",  # another overlong '/'
    b"\xed\xa0\x80",  # a UTF-16 surrogate (U+D800)
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # a five-byte form
]
# Stands in for the field's value while the request is serialized; no other
# string of the request contains it (the filler below never does).
_MARK = "\x1d"


def _string_paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every string field of this message type, nested ones included (one level of
    each message field, the first element of a repeated one)."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append((field,))
        elif field.message_type is not None and depth < 3:
            if field.message_type.GetOptions().map_entry:
                continue
            paths.extend((field, *rest) for rest in _string_paths(field.message_type, depth + 1))
    return paths


def _set_path(message: Message, path: tuple[FieldDescriptor, ...], value: str) -> None:
    *parents, leaf = path
    for field in parents:
        if field.is_repeated:
            items = getattr(message, field.name)
            message = items[0] if len(items) else items.add()
        else:
            message = getattr(message, field.name)
    if leaf.is_repeated:
        items = getattr(message, leaf.name)
        if len(items):
            items[0] = value
        else:
            items.append(value)
    else:
        setattr(message, leaf.name, value)


def with_invalid_utf8(
    descriptor: Descriptor,
    fillers: list[str],
    target: tuple[FieldDescriptor, ...],
    bad: bytes,
) -> bytes:
    """A request with every string field filled, whose `target` field holds `bad`.

    The field is serialized holding a marker of bad's length, whose bytes are
    then replaced: every length prefix around it (nested messages) stays right.
    """
    assert len(bad) < 0x1D  # the marker's length prefix is not a marker byte itself
    message = GetMessageClass(descriptor)()
    for path, filler in zip(_string_paths(descriptor), fillers, strict=False):
        _set_path(message, path, filler)
    _set_path(message, target, _MARK * len(bad))  # last: a oneof keeps the target
    body = message.SerializeToString()
    needle = varint(len(bad)) + _MARK.encode() * len(bad)
    assert body.count(needle) == 1, (body, needle)
    return body.replace(needle, varint(len(bad)) + bad)


# Every method that takes a string (concert.v1's and grpc.health.v1's), by its path.
RAW_METHODS: list[MethodDescriptor] = [
    m for m in [*METHODS, *HEALTH.methods] if _string_paths(m.input_type)
]


async def send_raw(
    channel: grpc.aio.Channel, method: MethodDescriptor, body: bytes
) -> grpc.aio.AioRpcError | None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = kind(path, request_serializer=None, response_deserializer=None)(body, timeout=20)
    return await _outcome(method, call)


@st.composite
def _invalid_utf8_bodies(draw: st.DrawFn, method: MethodDescriptor) -> bytes:
    paths = _string_paths(method.input_type)
    target = draw(st.sampled_from(paths))
    filler = st.text(
        st.characters(blacklist_characters=_MARK, blacklist_categories=("Cs",)), max_size=12
    )
    fillers = draw(st.lists(filler, min_size=len(paths), max_size=len(paths)))
    valid = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=4)
    bad = (
        draw(valid).encode()
        + draw(st.sampled_from(INVALID_UTF8_SEQUENCES))
        + draw(valid).encode()
        + ("\u00fc".encode() if draw(st.booleans()) else b"")
    )
    return with_invalid_utf8(method.input_type, fillers, target, bad)


def _examples_of(
    method: MethodDescriptor, check: Callable[[MethodDescriptor, bytes], None]
) -> Callable[[], None]:
    """`check` run on EXAMPLES_PER_METHOD bodies of this method with invalid UTF-8."""

    @PER_METHOD
    @given(body=_invalid_utf8_bodies(method))
    def of_this_method(body: bytes) -> None:
        check(method, body)

    return of_this_method


async def test_raw_bodies_with_invalid_utf8_are_invalid_argument_never_unknown(
    app: App, channel: grpc.aio.Channel
) -> None:
    """Whatever the method (grpc.health.v1's too) and however deep the string
    field, a body that is not UTF-8 there is INVALID_ARGUMENT with an ErrorInfo
    (REQUEST_MALFORMED) and a BadRequest naming the request, whatever the call's
    credential: the body is read before anything else."""
    loop = asyncio.get_running_loop()
    seen: Counter[str] = Counter()

    def property_holds(method: MethodDescriptor, body: bytes) -> None:
        error = asyncio.run_coroutine_threadsafe(send_raw(channel, method, body), loop).result(
            timeout=60
        )
        assert error is not None, f"{method.full_name} answered {body!r}"
        details = error_details(error)
        assert details.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
            f"{method.full_name} answered {details.code.name} ({details.message}) to {body!r}"
        )
        assert details.info is not None, f"{method.full_name}: {details.code.name}, no ErrorInfo"
        assert (details.code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "REQUEST_MALFORMED",
        ), (method.full_name, body, details.message)
        assert details.bad_fields == {"request"}, method.full_name
        seen[method.full_name] += 1

    def every_method() -> None:
        # Each method its own examples (a draw of the method could miss one).
        for method in RAW_METHODS:
            _examples_of(method, property_holds)()

    await asyncio.to_thread(every_method)
    assert set(seen) == {m.full_name for m in RAW_METHODS}, seen


def test_invalid_utf8_is_spliced_into_the_wire_format_of_a_nested_field() -> None:
    # The splice itself: IssueToken's password.email, inside a nested message.
    method = next(m for m in METHODS if m.name == "IssueToken")
    target = next(p for p in _string_paths(method.input_type) if len(p) == 2)
    body = with_invalid_utf8(method.input_type, ["a", "b", "c"], target, b"x\xff")
    assert b"x\xff" in body
    with pytest.raises(DecodeError):
        queue_pb2.IssueTokenRequest.FromString(body)
