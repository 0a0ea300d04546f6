"""A sandbox payment module's credentials, as the tests configure and sign with
them, and a module run in the test's process."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

from concert.v1 import payment_callback_pb2
from server import base64url
from server.clock import Clock
from server.module_signing import MODULE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from server.payment_module.app import ModuleApp, build_module_app
from server.payment_module.settings import ModuleSettings

MODULE = "sandbox"
SECRET = b"a sandbox module's shared secret"


def secrets_file(folder: Path) -> Path:
    """A CONCERT_PAYMENT_MODULE_SECRETS_FILE naming the sandbox module."""
    path = folder / "payment-modules"
    path.write_text(f"{MODULE} {base64url.encode(SECRET)}\n")
    return path


def module_metadata(
    now: datetime,
    request: payment_callback_pb2.ConfirmModulePaymentRequest,
    *,
    module: str = MODULE,
    secret: bytes = SECRET,
    skew: timedelta = timedelta(0),
) -> tuple[tuple[str, str], ...]:
    """The metadata a module sends with a callback, signed at `now + skew`."""
    timestamp = int((now + skew).timestamp())
    return (
        (MODULE_HEADER, module),
        (TIMESTAMP_HEADER, str(timestamp)),
        (SIGNATURE_HEADER, sign(secret, module, timestamp, request)),
    )


@contextlib.asynccontextmanager
async def running_module(
    settings: ModuleSettings, database_url: str, clock: Clock, seed: int = 7
) -> AsyncIterator[ModuleApp]:
    """The module started in this process, with no background dispatcher (tests
    run its passes themselves), stopped after."""
    module = await build_module_app(
        settings, database_url=database_url, clock=clock, rng=random.Random(seed), dispatch=False
    )
    await module.start()
    try:
        yield module
    finally:
        await module.stop(grace=0.5)
