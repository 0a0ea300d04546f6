"""The gRPC entrypoints: one thin servicer module per concert.v1 service."""

from __future__ import annotations

import grpc

from server.api import (
    account,
    admin,
    concert,
    payment,
    payment_callback,
    queue,
    reservation,
    wallet,
)
from server.api.features import Features
from server.context import ServiceContext

_MODULES = (account, queue, concert, reservation, payment, payment_callback, wallet, admin)


def register_all(server: grpc.aio.Server, ctx: ServiceContext, features: Features) -> None:
    for module in _MODULES:
        module.register(server, ctx, features)
