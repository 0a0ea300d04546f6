"""The gate in front of ConcertService, ReservationService and PaymentService."""

from __future__ import annotations

import grpc
import pytest

from concert.v1 import concert_pb2, queue_pb2
from server.app import App
from server.clock import FakeClock
from server.fan import fan_context
from server.interceptors import CallPipeline
from server.queue.gate import QueueGateLayer, admit
from tests.queue.helpers import admit_waiting, complete, issue_all, settle
from tests.support import Stubs, bearer, error_details


async def list_concerts(stubs: Stubs, metadata: object) -> grpc.aio.AioRpcError | None:
    try:
        await stubs.concert.ListConcerts(concert_pb2.ListConcertsRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err
    return None


async def test_waiting_fans_are_refused_until_the_counter_reaches_them(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    fans = await issue_all(app, stubs, 4)  # capacity 2: numbers 1, 2 admitted
    await admit_waiting(app)  # and the line read (people_ahead)
    assert await list_concerts(stubs, bearer(fans[0][1])) is None
    assert await list_concerts(stubs, bearer(fans[1][1])) is None

    refused = await list_concerts(stubs, bearer(fans[3][1]))
    assert refused is not None
    details = error_details(refused)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "QUEUE_NOT_ADMITTED"
    # Fan 3 is the one live fan waiting ahead.
    assert dict(details.info.metadata) == {"queue_number": "4", "people_ahead": "1"}
    assert details.retry is not None and details.retry.retry_delay.seconds >= 1

    # One payment completes fan 1: fan 3 is in, fan 4 is next.
    assert await complete(app, fans[0][1])
    await settle(app, 1)
    await admit_waiting(app)
    assert await list_concerts(stubs, bearer(fans[2][1])) is None
    refused = await list_concerts(stubs, bearer(fans[3][1]))
    assert refused is not None
    assert error_details(refused).info.metadata["people_ahead"] == "0"

    # The completed token is refused at once, not when it expires.
    used = await list_concerts(stubs, bearer(fans[0][1]))
    assert used is not None
    assert (error_details(used).code, error_details(used).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOKEN_COMPLETED",
    )

    # The expiry job moves the counter too: fans 2 and 3 lapse, 4 is in.
    clock.advance(app.ctx.settings.token_ttl_seconds - 1)
    fresh = await stubs.queue.RefreshToken(
        queue_pb2.RefreshTokenRequest(), metadata=bearer(fans[3][1])
    )
    assert fresh.status.state == queue_pb2.QUEUE_TOKEN_STATE_WAITING  # refreshed just in time
    clock.advance(1)
    run = await app.ctx.jobs.run_now("queue.expire_stale_tokens")
    assert run.result == 2
    await admit_waiting(app)
    assert await list_concerts(stubs, bearer(fresh.token)) is None


async def test_missing_malformed_forged_and_expired_tokens_are_unauthenticated(
    app: App, stubs: Stubs, clock: FakeClock
) -> None:
    [(_, token)] = await issue_all(app, stubs, 1)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    session_not_token = app.ctx.signer.sign("session", b"\x01" + b"\x00" * 24)
    cases = {
        "missing": (),
        "not bearer": (("authorization", f"Basic {token}"),),
        "malformed": bearer("garbage"),
        "forged": bearer(forged),
        "wrong purpose": bearer(session_not_token),
    }
    for name, metadata in cases.items():
        err = await list_concerts(stubs, metadata)
        assert err is not None, name
        details = error_details(err)
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_INVALID",
        ), name
    clock.advance(app.ctx.settings.token_ttl_seconds)
    err = await list_concerts(stubs, bearer(token))
    assert err is not None
    assert (error_details(err).code, error_details(err).reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_EXPIRED",
    )


async def test_every_method_of_every_gated_service_is_gated(channel: grpc.aio.Channel) -> None:
    from google.protobuf import message_factory

    from concert.v1 import payment_pb2, reservation_pb2

    checked = 0
    for module in (concert_pb2, reservation_pb2, payment_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request_class = message_factory.GetMessageClass(method.input_type)
                response_class = message_factory.GetMessageClass(method.output_type)
                path = f"/{service.full_name}/{method.name}"
                call = channel.unary_unary(
                    path,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                )
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(request_class())
                assert error_details(err.value).reason == "TOKEN_INVALID", path
                checked += 1
    assert checked >= 6


async def test_the_gate_costs_no_database_round_trip(app: App, stubs: Stubs) -> None:
    fans = await issue_all(app, stubs, 3)
    pool = app.ctx.pool
    before = pool.get_stats().get("requests_num", 0)
    for _ in range(20):
        assert await list_concerts(stubs, bearer(fans[2][1])) is not None  # waiting
        assert await list_concerts(stubs, bearer("forged.token")) is not None
    # The admission decision itself reads only memory.
    fan = admit(app.ctx.signer, app.ctx.clock, app.queue, fans[0][1])
    assert fan.queue_number == 1 and fan.user_id == fans[0][0]
    assert pool.get_stats().get("requests_num", 0) == before


class _Context:
    """The part of a ServicerContext the layers read: the caller's metadata."""

    def __init__(self, metadata: object) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> object:
        return self._metadata


async def test_the_gate_binds_the_fan_for_the_call_only(app: App, stubs: Stubs) -> None:
    [(user_id, token), (other_id, other)] = await issue_all(app, stubs, 2)
    seen = []
    gate = CallPipeline([QueueGateLayer(app.ctx.signer, app.ctx.clock, app.queue)])

    async def handler(request: object, context: object) -> str:
        fan = fan_context.get()
        seen.append(fan)
        return "ok"

    class Details:
        method = "/concert.v1.ConcertService/ListConcerts"
        invocation_metadata = ()

    inner = grpc.unary_unary_rpc_method_handler(handler)

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return inner

    wrapped = await gate.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert await wrapped.unary_unary(object(), _Context(bearer(token))) == "ok"
    assert seen[0] is not None and seen[0].user_id == user_id
    assert fan_context.get() is None
    # Built once per method; each call's credential is read from its own context.
    again = await gate.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert again is wrapped
    assert await again.unary_unary(object(), _Context(bearer(other))) == "ok"
    assert seen[1] is not None and seen[1].user_id == other_id
    assert fan_context.get() is None
