"""The scenarios: what each prepares (unmeasured) and the phases it then measures.

Every scenario runs on a server of its own, over a fresh database, and its
plan always starts with the baseline: grpc.health.v1.Health/Check from the
same client at the same concurrency, the yardstick every ratio divides by.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from concert.v1 import (
    account_pb2,
    concert_pb2,
    payment_pb2,
    queue_pb2,
    reservation_pb2,
    wallet_pb2,
)
from loadgen.prepare import (
    PASSWORD,
    AdmittedFan,
    Fan,
    Preparer,
    bearer,
    create_fans,
    seat_list,
)

HEALTH = "/grpc.health.v1.Health/Check"
PRICE = 10_000
# Enough money for every seat a fan may buy in any scenario.
FUNDS = 1_000_000
# How many distinct admitted fans the read-only probes cycle through.
READERS = 500
# The GetQueueStatus probe beside a sign-in storm: an open-loop schedule of
# calls per second (at most this many in flight), so that it measures the
# latency a polling fan sees without itself taking a share of the two cores
# from the hashing it is there to watch. (Until Round 3 it was 4 closed-loop
# clients: ~1,200 calls/s, about a third of the machine.)
STORM_PROBE_RATE = 200.0
STORM_PROBE_CONCURRENCY = 16


@dataclass
class Options:
    concurrency: int
    requests: int
    duration: float
    users: int
    seats: int
    capacity: int
    hash_cost: int
    sale_seconds: float = 120.0
    synchronous_commit: str = "on"
    # The junk storm's calls a second, open loop; 0: closed loop at `concurrency`.
    junk_rate: float = 0.0


@dataclass
class Setup:
    """What a scenario needs while preparing."""

    database_url: str
    preparer: Preparer
    admin_key: str
    options: Options


def call(request: Message, metadata: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    return {
        "request": base64.b64encode(request.SerializeToString()).decode(),
        "metadata": [list(m) for m in metadata],
    }


def phase(
    name: str,
    method: str,
    calls: list[dict[str, Any]],
    options: Options,
    *,
    concurrency: int | None = None,
    requests: int | None = None,
) -> dict[str, Any]:
    return {
        "kind": "calls",
        "name": name,
        "method": method,
        "calls": calls,
        "concurrency": concurrency or options.concurrency,
        "requests": requests or options.requests,
        "duration": options.duration,
    }


def baseline(options: Options) -> list[dict[str, Any]]:
    return [
        phase("Health/Check (baseline)", HEALTH, [call(health_pb2.HealthCheckRequest())], options)
    ]


# --- the methods alone ---------------------------------------------------------------------------


async def _readers(setup: Setup) -> list[AdmittedFan]:
    fans = await create_fans(setup.database_url, READERS, "reader", setup.options.hash_cost)
    return await setup.preparer.admit(fans)


async def get_queue_status(setup: Setup) -> list[dict[str, Any]]:
    readers = await _readers(setup)
    calls = [call(queue_pb2.GetQueueStatusRequest(), bearer(f.token)) for f in readers]
    return [
        phase("GetQueueStatus", "/concert.v1.QueueService/GetQueueStatus", calls, setup.options)
    ]


async def list_available_seats(setup: Setup) -> list[dict[str, Any]]:
    readers = await _readers(setup)
    dates = await setup.preparer.create_dates(setup.options.seats, PRICE)
    date_id = dates[0][0]
    calls = [
        call(concert_pb2.ListAvailableSeatsRequest(date_id=date_id), bearer(f.token))
        for f in readers
    ]
    return [
        phase(
            "ListAvailableSeats (page 100)",
            "/concert.v1.ConcertService/ListAvailableSeats",
            calls,
            setup.options,
        )
    ]


async def issue_token_session(setup: Setup) -> list[dict[str, Any]]:
    # One fresh fan per call: every call issues a new place in line.
    fans = await create_fans(
        setup.database_url, setup.options.requests, "session", setup.options.hash_cost
    )
    calls = [call(queue_pb2.IssueTokenRequest(session_token=f.session)) for f in fans]
    return [
        phase("IssueToken (session)", "/concert.v1.QueueService/IssueToken", calls, setup.options)
    ]


async def _password_fans(setup: Setup) -> list[Fan]:
    # Password calls run at tens per second: a few thousand fans outlast any window.
    count = min(setup.options.requests, 5000)
    return await create_fans(setup.database_url, count, "password", setup.options.hash_cost)


async def issue_token_password(setup: Setup) -> list[dict[str, Any]]:
    fans = await _password_fans(setup)
    calls = [
        call(
            queue_pb2.IssueTokenRequest(
                password=queue_pb2.PasswordCredential(email=f.email, password=PASSWORD)
            )
        )
        for f in fans
    ]
    return [
        phase("IssueToken (password)", "/concert.v1.QueueService/IssueToken", calls, setup.options)
    ]


async def sign_in(setup: Setup) -> list[dict[str, Any]]:
    fans = await _password_fans(setup)
    calls = [call(account_pb2.SignInRequest(email=f.email, password=PASSWORD)) for f in fans]
    return [phase("SignIn", "/concert.v1.AccountService/SignIn", calls, setup.options)]


async def reserve_seat_contended(setup: Setup) -> list[dict[str, Any]]:
    """Every call a different fan, all after the same seat: one wins, the rest are told no."""
    count = setup.options.requests
    fans = await setup.preparer.admit(
        await create_fans(setup.database_url, count, "contender", setup.options.hash_cost)
    )
    date_id = (await setup.preparer.create_dates(1, PRICE))[0][0]
    calls = [
        call(
            reservation_pb2.ReserveSeatRequest(
                date_id=date_id, seat_number=1, request_id=str(uuid.uuid4())
            ),
            bearer(f.token),
        )
        for f in fans
    ]
    return [
        phase(
            "ReserveSeat (contended: 1 seat)",
            "/concert.v1.ReservationService/ReserveSeat",
            calls,
            setup.options,
        )
    ]


async def reserve_seat_spread(setup: Setup) -> list[dict[str, Any]]:
    """Every call a different fan after a different seat: all should win."""
    count = setup.options.requests
    fans = await setup.preparer.admit(
        await create_fans(setup.database_url, count, "spread", setup.options.hash_cost)
    )
    seats = seat_list(await setup.preparer.create_dates(count, PRICE))
    calls = [
        call(
            reservation_pb2.ReserveSeatRequest(
                date_id=date_id, seat_number=seat, request_id=str(uuid.uuid4())
            ),
            bearer(f.token),
        )
        for f, (date_id, seat) in zip(fans, seats, strict=True)
    ]
    return [
        phase(
            "ReserveSeat (spread: 1 fan, 1 seat)",
            "/concert.v1.ReservationService/ReserveSeat",
            calls,
            setup.options,
        )
    ]


async def pay(setup: Setup) -> list[dict[str, Any]]:
    """Every call a different fan paying for the seat it holds."""
    count = setup.options.requests
    fans = await create_fans(setup.database_url, count, "payer", setup.options.hash_cost)
    await setup.preparer.fund(fans, FUNDS)
    admitted = await setup.preparer.admit(fans)
    seats = seat_list(await setup.preparer.create_dates(count, PRICE))
    holds = await setup.preparer.hold(admitted, seats)
    calls = [
        call(
            payment_pb2.PayRequest(reservation_id=reservation, request_id=str(uuid.uuid4())),
            bearer(f.token),
        )
        for f, reservation in zip(admitted, holds, strict=True)
    ]
    return [phase("Pay", "/concert.v1.PaymentService/Pay", calls, setup.options)]


async def charge(setup: Setup) -> list[dict[str, Any]]:
    """The operator tops up wallets, spread over many users (no shared row)."""
    fans = await create_fans(setup.database_url, READERS, "wallet", setup.options.hash_cost)
    calls = [
        call(
            wallet_pb2.ChargeRequest(
                user_id=fans[i % len(fans)].user_id, amount=100, request_id=str(uuid.uuid4())
            ),
            bearer(setup.admin_key),
        )
        for i in range(setup.options.requests)
    ]
    return [phase("Charge", "/concert.v1.WalletService/Charge", calls, setup.options)]


# --- the storm and the sale ----------------------------------------------------------------------


async def sign_in_storm(setup: Setup) -> list[dict[str, Any]]:
    """SignIn at full concurrency while a probe polls GetQueueStatus beside it at a fixed rate.

    The fans' apps are built from our client guide: refused busy, they wait the
    RetryInfo delay before trying again (the junk storm's bots do not)."""
    [storm] = await sign_in(setup)
    storm["name"] = "SignIn (storm)"
    storm["honour_retry_info"] = True
    [probe] = await get_queue_status(setup)
    probe["name"] = "GetQueueStatus (during storm)"
    probe["concurrency"] = STORM_PROBE_CONCURRENCY
    probe["rate"] = STORM_PROBE_RATE
    probe["requests"] = 10_000_000  # bounded by the storm's duration
    return [storm, probe]


async def on_sale_day(setup: Setup) -> list[dict[str, Any]]:
    options = setup.options
    fans = await create_fans(setup.database_url, options.users, "fan", options.hash_cost)
    await setup.preparer.fund(fans, FUNDS)
    [(date_id, seats)] = await setup.preparer.create_dates(options.seats, PRICE)
    await setup.preparer.set_capacity(options.capacity)
    return [
        {
            "kind": "onsale",
            "name": "on-sale day",
            "fans": len(fans),
            "sessions": [f.session for f in fans],
            "date_id": date_id,
            "seats": seats,
            "concurrency": options.concurrency,
            "duration": options.sale_seconds,
        }
    ]


# The junk storm: real fans sign in at this rate beside it, each from an address
# of its own (x-forwarded-for through the bench's trusted loopback "proxy").
JUNK_LEGIT_RATE = 5.0
JUNK_LEGIT_CONCURRENCY = 8
# The botnet is driven by a load generator process of its own (its event loop
# is not the fans'), niced: on this small machine its CPU stands for the
# attackers' own, not the server's. The fans and the probe start once it runs.
JUNK_CLIENT_NICENESS = 10
JUNK_WARM_UP_SECONDS = 3.0
SIGN_IN = "/concert.v1.AccountService/SignIn"


async def junk_storm(setup: Setup) -> list[dict[str, Any]]:
    """Junk SignIns (unknown emails, wrong passwords) at full concurrency, each from
    an address of its own (a botnet: no budget stops them), while real fans sign in
    at JUNK_LEGIT_RATE from theirs, with the session of an earlier sign-in, and a
    probe polls GetQueueStatus. Addresses are header values only (RFC 2544's
    benchmarking range): no traffic leaves loopback."""
    fans = await _password_fans(setup)
    junk = [
        call(
            account_pb2.SignInRequest(email=f"junk-{i}@example.invalid", password="not it, no"),
            (("x-forwarded-for", f"198.18.{i // 250 % 250}.{i % 250 + 1}"),),
        )
        for i in range(setup.options.requests)
    ]
    # Real fans have signed in before: they send the session they got then,
    # which keeps them a place in the hashing line.
    legit = [
        call(
            account_pb2.SignInRequest(
                email=f.email, password=PASSWORD, previous_session_token=f.session
            ),
            (("x-forwarded-for", f"192.0.2.{i % 250 + 1}"),),
        )
        for i, f in enumerate(fans)
    ]
    fan_phase = phase("SignIn (legit, during junk)", SIGN_IN, legit, setup.options)
    fan_phase.update(concurrency=JUNK_LEGIT_CONCURRENCY, rate=JUNK_LEGIT_RATE, requests=10_000_000)
    [probe] = await get_queue_status(setup)
    probe.update(
        name="GetQueueStatus (during junk)",
        concurrency=STORM_PROBE_CONCURRENCY,
        rate=STORM_PROBE_RATE,
        requests=10_000_000,
    )
    # The junk runs for the whole phase duration (most of it is refused at once:
    # a count of calls would be over in a couple of seconds).
    junk_phase = phase("SignIn (junk)", SIGN_IN, junk, setup.options, requests=10_000_000)
    if setup.options.junk_rate:
        junk_phase.update(rate=setup.options.junk_rate)
    junk_phase.update(
        own_process=True,
        niceness=JUNK_CLIENT_NICENESS,
        duration=setup.options.duration + 2 * JUNK_WARM_UP_SECONDS,
    )
    fan_phase.update(start_after=JUNK_WARM_UP_SECONDS)
    probe.update(start_after=JUNK_WARM_UP_SECONDS)
    return [junk_phase, fan_phase, probe]


Prepare = Callable[[Setup], Awaitable[list[dict[str, Any]]]]

# Scenario name -> its stages, each stage a list of preparations whose phases run together.
METHODS: dict[str, Prepare] = {
    "GetQueueStatus": get_queue_status,
    "ListAvailableSeats": list_available_seats,
    "IssueToken-session": issue_token_session,
    "IssueToken-password": issue_token_password,
    "SignIn": sign_in,
    "ReserveSeat-contended": reserve_seat_contended,
    "ReserveSeat-spread": reserve_seat_spread,
    "Pay": pay,
    "Charge": charge,
}
SCENARIOS: dict[str, list[Prepare]] = {
    "baseline": [],
    "methods": list(METHODS.values()),
    **{name: [prepare] for name, prepare in METHODS.items()},
    "storm": [sign_in_storm],
    "junk-storm": [junk_storm],
    "onsale": [on_sale_day],
}
# Methods whose work includes no password hash (the p99 target at 16 clients).
HASHLESS = {
    "GetQueueStatus",
    "ListAvailableSeats (page 100)",
    "IssueToken (session)",
    "ReserveSeat (contended: 1 seat)",
    "ReserveSeat (spread: 1 fan, 1 seat)",
    "Pay",
    "Charge",
}
