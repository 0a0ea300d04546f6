"""A sandbox payment module's credentials, as the tests configure and sign with them."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from concert.v1 import payment_callback_pb2
from server import base64url
from server.module_signing import MODULE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

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
