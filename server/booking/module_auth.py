"""Who may call PaymentCallbackService: a configured payment module, by a signed,
timestamped call (the proto's comment says what is signed and how).

A shared secret per module, not mutual TLS, because it works through any proxy
and any transport, and it is what card acquirers' webhooks use. The timestamp
bounds a replay of a captured call to module_signing.MAX_SKEW; within it a replay changes
nothing anyway (the module payment id makes the call idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from concert.v1 import payment_callback_pb2
from server.errors import ErrorReason, Unauthenticated

# The signed text and the MAC are shared with the sandbox module (server/module_signing.py).
from server.module_signing import (
    MODULE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    parse_module_lines,
    parse_timestamp,
    signature_holds,
    signed_text,
)


@dataclass(frozen=True)
class ModuleSecrets:
    """The configured modules' shared secrets, by module id (none: nobody may call),
    and the addresses of those the server calls (RefundPayment, ListPayments)."""

    secrets: Mapping[str, bytes] = field(default_factory=dict)
    addresses: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path | None) -> ModuleSecrets:
        """CONCERT_PAYMENT_MODULE_SECRETS_FILE: `<module id> <base64url secret> [HOST:PORT]`
        per line (module_signing.parse_module_lines)."""
        if path is None:
            return cls()
        entries = parse_module_lines(path.read_text(), str(path))
        return cls(
            {entry.module_id: entry.secret for entry in entries},
            {entry.module_id: entry.address for entry in entries if entry.address},
        )


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
    timestamp = parse_timestamp(headers.get(TIMESTAMP_HEADER, ""))
    signature = headers.get(SIGNATURE_HEADER, "")
    if (
        secret is None
        or timestamp is None
        or not signature_holds(
            secret, signed_text(module_id, timestamp, request), signature, timestamp, now
        )
    ):
        raise Unauthenticated(
            ErrorReason.ERROR_REASON_MODULE_SIGNATURE_INVALID,
            "only a configured payment module may call this, with a fresh signed timestamp",
        )
    return module_id
