"""`x-request-id`: the caller's, when well formed, else a fresh one; always sent back.

It comes back in the trailing metadata (with the status: no extra send per
call), on a refused call as well as an answered one, beside the error's
details (the log lines of the call carry the same id).
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concert.v1 import admin_pb2
from server.app import App
from tests.support import ADMIN, Stubs, error_details


def echoed(metadata: grpc.aio.Metadata | None) -> list[str]:
    return [str(value) for key, value in (metadata or ()) if key == "x-request-id"]


async def test_the_callers_request_id_comes_back_on_answers_and_on_errors(
    app: App, stubs: Stubs
) -> None:
    answered = stubs.admin.GetQueueStats(
        admin_pb2.GetQueueStatsRequest(), metadata=(*ADMIN, ("x-request-id", "order-42/a"))
    )
    await answered
    assert echoed(await answered.trailing_metadata()) == ["order-42/a"]

    refused = stubs.admin.GetQueueStats(
        admin_pb2.GetQueueStatsRequest(), metadata=(("x-request-id", "order-43"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await refused
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert echoed(error.value.trailing_metadata()) == ["order-43"]
    # The error's details still go with it.
    assert error_details(error.value).reason == "ADMIN_KEY_MISSING"


@pytest.mark.parametrize(
    "sent",
    [None, "", "x" * 129, "has space", "semi;colon", "back\\slash", "<b>"],
    ids=["absent", "empty", "too-long", "space", "semicolon", "backslash", "angle-brackets"],
)
async def test_a_missing_or_malformed_request_id_is_replaced_by_a_fresh_one(
    app: App, stubs: Stubs, sent: str | None
) -> None:
    metadata = ADMIN if sent is None else (*ADMIN, ("x-request-id", sent))
    call = stubs.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(), metadata=metadata)
    await call
    (generated,) = echoed(await call.trailing_metadata())
    assert generated != sent
    assert uuid.UUID(generated).version == 4


async def test_grpcs_own_unary_methods_echo_it_too(app: App, channel: grpc.aio.Channel) -> None:
    call = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "probe-1"),)
    )
    await call
    assert echoed(await call.trailing_metadata()) == ["probe-1"]
