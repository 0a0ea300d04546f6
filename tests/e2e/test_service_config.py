"""The gRPC service config shipped with the protos (protos/concert/v1/service_config.json).

It names only real services and methods, covers every method once, retries
only methods safe to repeat and only on UNAVAILABLE; and a channel built with it
(as every client of the e2e suite builds its own) does retry as it says.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool

from concert.v1 import (
    account_pb2,
    admin_pb2,
    concert_pb2,
    payment_callback_pb2,
    payment_pb2,
    queue_pb2,
    reservation_pb2,
    wallet_pb2,
    wallet_pb2_grpc,
)
from tests.e2e.fan_walks import configured_channel
from tests.e2e.toolchains import SERVICE_CONFIG
from tests.support import ADMIN, free_port

SERVICES = [
    "concert.v1.AccountService",
    "concert.v1.AdminService",
    "concert.v1.ConcertService",
    "concert.v1.PaymentCallbackService",
    "concert.v1.PaymentService",
    "concert.v1.QueueService",
    "concert.v1.ReservationService",
    "concert.v1.WalletService",
]
# A repeated call changes nothing more than the first: the request carries an
# AIP-155 key (the server replays the first answer), or the method only reads.
IDEMPOTENCY_KEYS = {"request_id", "module_payment_id"}
READ_PREFIXES = ("Get", "List", "Watch")
# Writes without a key that are safe to repeat, and why.
NATURALLY_IDEMPOTENT = {
    "concert.v1.AccountService/SignIn": "a repeat signs another session; nothing else changes",
    "concert.v1.QueueService/IssueToken": "a fan with a live token gets that token back",
    "concert.v1.QueueService/RefreshToken": "re-signs the same expiry window",
    "concert.v1.AdminService/SetAdmission": "sets absolute values",
}


def service_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(SERVICE_CONFIG.read_text())
    return config


def all_methods() -> dict[str, Any]:
    pool = descriptor_pool.Default()
    return {
        f"{name}/{method.name}": method
        for name in SERVICES
        for method in pool.FindServiceByName(name).methods
    }


def configured_methods() -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in service_config()["methodConfig"]:
        for name in entry["name"]:
            assert set(name) == {"service", "method"}, f"name each method, not a service: {name}"
            yield f"{name['service']}/{name['method']}", entry


def test_every_method_named_is_real_and_every_method_is_named_once() -> None:
    in_package = [s.full_name for f in _concert_files() for s in f.services_by_name.values()]
    assert sorted(in_package) == SERVICES, "a service was added: give its methods a config"
    named = [name for name, _ in configured_methods()]
    unknown = sorted(set(named) - set(all_methods()))
    assert unknown == [], f"the service config names methods that do not exist: {unknown}"
    assert sorted(named) == sorted(all_methods()), "every method is named exactly once"


def _concert_files() -> list[Any]:
    pool = descriptor_pool.Default()
    modules = [account_pb2, admin_pb2, concert_pb2, payment_callback_pb2, payment_pb2]
    modules += [queue_pb2, reservation_pb2, wallet_pb2]
    return [pool.FindFileByName(module.DESCRIPTOR.name) for module in modules]


def test_only_methods_safe_to_repeat_are_retried_and_only_on_unavailable() -> None:
    methods = all_methods()
    for name, entry in configured_methods():
        policy = entry.get("retryPolicy")
        if policy is None:
            continue
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"], name
        method = methods[name]
        keyed = IDEMPOTENCY_KEYS & set(method.input_type.fields_by_name)
        reads = method.name.startswith(READ_PREFIXES)
        assert keyed or reads or name in NATURALLY_IDEMPOTENT, f"{name} is not safe to retry"
        assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5


def test_unary_methods_have_a_timeout_and_the_watch_stream_has_none() -> None:
    methods = all_methods()
    for name, entry in configured_methods():
        if methods[name].server_streaming:
            # The watch lasts until admission, which may take an hour.
            assert "timeout" not in entry, name
        else:
            assert entry["timeout"].endswith("s") and float(entry["timeout"][:-1]) > 0, name


class _FlakyWallet(wallet_pb2_grpc.WalletServiceServicer):
    """Answers GetBalance with a scripted list of codes, then OK; counts the attempts."""

    def __init__(self, failures: list[grpc.StatusCode]) -> None:
        self.failures = failures
        self.attempts = 0
        self.lock = threading.Lock()

    def GetBalance(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.attempts += 1
            attempt = self.attempts
        if attempt <= len(self.failures):
            context.abort(self.failures[attempt - 1], "scripted failure")
        return wallet_pb2.GetBalanceResponse(user_id=request.user_id, balance=7)


@pytest.fixture
def flaky_wallet() -> Iterator[tuple[str, _FlakyWallet]]:
    """A WalletService on a port of its own that fails as each test scripts it.

    It stands in for the concert server only to observe the client's channel:
    what the client does after UNAVAILABLE is the thing under test, and the
    real server cannot be made to answer UNAVAILABLE on cue.
    """
    servicer = _FlakyWallet([])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, servicer
    finally:
        server.stop(None)


def test_a_channel_with_the_config_retries_unavailable(
    flaky_wallet: tuple[str, _FlakyWallet],
) -> None:
    address, servicer = flaky_wallet
    servicer.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with configured_channel(address) as channel:
        reply = wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
            wallet_pb2.GetBalanceRequest(user_id="u"), metadata=ADMIN
        )
    assert (reply.balance, servicer.attempts) == (7, 3)


def test_a_channel_with_the_config_leaves_other_codes_to_the_caller(
    flaky_wallet: tuple[str, _FlakyWallet],
) -> None:
    # RESOURCE_EXHAUSTED carries RetryInfo's delay, which only the caller reads.
    address, servicer = flaky_wallet
    servicer.failures = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    with configured_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
            wallet_pb2.GetBalanceRequest(user_id="u"), metadata=ADMIN
        )
    assert (refused.value.code(), servicer.attempts) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 1)


def test_without_the_config_nothing_is_retried(flaky_wallet: tuple[str, _FlakyWallet]) -> None:
    # The control: the retries above are the config's, not grpc's defaults.
    address, servicer = flaky_wallet
    servicer.failures = [grpc.StatusCode.UNAVAILABLE]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
            wallet_pb2.GetBalanceRequest(user_id="u"), metadata=ADMIN, timeout=10
        )
    assert (refused.value.code(), servicer.attempts) == (grpc.StatusCode.UNAVAILABLE, 1)
