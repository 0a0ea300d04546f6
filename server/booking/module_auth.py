"""Who may call PaymentCallbackService: a configured payment module, by a signed,
timestamped call (the proto's comment says what is signed and how).

A shared secret per module, not mutual TLS, because it works through any proxy
and any transport, and it is what card acquirers' webhooks use. The timestamp
bounds a replay of a captured call to MAX_SKEW; within it a replay changes
nothing anyway (the module payment id makes the call idempotent).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from concert.v1 import payment_callback_pb2
from server import base64url
from server.errors import ErrorReason, Unauthenticated
from server.signing import read_keys_file

MODULE_HEADER = "x-payment-module"
TIMESTAMP_HEADER = "x-payment-module-timestamp"
SIGNATURE_HEADER = "x-payment-module-signature"
MAX_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class ModuleSecrets:
    """The configured modules' shared secrets, by module id (none: nobody may call)."""

    secrets: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path | None) -> ModuleSecrets:
        """CONCERT_PAYMENT_MODULE_SECRETS_FILE: `<module id> <base64url secret>` per line."""
        if path is None:
            return cls()
        keys, _ = read_keys_file(path)
        return cls({key.kid: key.secret for key in keys})


def signed_text(
    module_id: str, timestamp: int, request: payment_callback_pb2.ConfirmModulePaymentRequest
) -> bytes:
    return "\n".join(
        (
            module_id,
            str(timestamp),
            request.module_payment_id,
            request.reservation_id,
            str(request.amount),
            request.session_token,
        )
    ).encode()


def sign(
    secret: bytes,
    module_id: str,
    timestamp: int,
    request: payment_callback_pb2.ConfirmModulePaymentRequest,
) -> str:
    """The signature a module sends (the server's check, and a module's client, use it)."""
    mac = hmac.new(secret, signed_text(module_id, timestamp, request), hashlib.sha256)
    return base64url.encode(mac.digest())


def authenticate_module(
    secrets: ModuleSecrets,
    now: datetime,
    metadata: Iterable[tuple[str, str | bytes]],
    request: payment_callback_pb2.ConfirmModulePaymentRequest,
) -> str:
    """The calling module's id; UNAUTHENTICATED (MODULE_SIGNATURE_INVALID) otherwise,
    with one message whatever was wrong (no oracle for which part failed)."""
    headers = {key: value for key, value in metadata if isinstance(value, str)}
    module_id = headers.get(MODULE_HEADER, "")
    secret = secrets.secrets.get(module_id)
    try:
        timestamp = int(headers.get(TIMESTAMP_HEADER, ""))
    except ValueError:
        timestamp = None
    signature = headers.get(SIGNATURE_HEADER, "")
    fresh = timestamp is not None and abs(now.timestamp() - timestamp) <= MAX_SKEW.total_seconds()
    if (
        secret is None
        or timestamp is None
        or not fresh
        or not hmac.compare_digest(
            sign(secret, module_id, timestamp, request).encode(), signature.encode()
        )
    ):
        raise Unauthenticated(
            ErrorReason.ERROR_REASON_MODULE_SIGNATURE_INVALID,
            "only a configured payment module may call this, with a fresh signed timestamp",
        )
    return module_id
