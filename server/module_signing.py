"""The signatures a payment module and the concert server exchange, with the
module's shared secret: pure functions both sides use.

The server checks the callback's signature (server/booking/module_auth.py);
the sandbox module (server/payment_module) signs its callbacks and checks the
server's refund requests. Both sides need the same text and the same MAC,
and neither may import the other, so they live here, below both.

A signature is base64url (no padding) of HMAC-SHA256 over UTF-8 lines that
start with who signs and when; a timestamp more than MAX_SKEW away from the
checker's clock is refused, which bounds a replay of a captured call (within
it a replay changes nothing: every signed call is idempotent by its ids).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from concert.v1 import payment_callback_pb2
from server import base64url
from server.config import _listen_address

MODULE_HEADER = "x-payment-module"
TIMESTAMP_HEADER = "x-payment-module-timestamp"
SIGNATURE_HEADER = "x-payment-module-signature"
MAX_SKEW = timedelta(minutes=5)


def signed_text(
    module_id: str, timestamp: int, request: payment_callback_pb2.ConfirmModulePaymentRequest
) -> bytes:
    """What a callback's signature covers (concert.v1 PaymentCallbackService's comment)."""
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
    """The signature a module sends with a callback."""
    return mac(secret, signed_text(module_id, timestamp, request))


def refund_text(module_id: str, timestamp: int, payment_id: str, request_id: str) -> bytes:
    """What a refund request's signature covers (paymentmodule.v1 RefundPayment's
    comment); the leading word keeps it from ever equalling a callback's text."""
    return "\n".join(("refund", module_id, str(timestamp), payment_id, request_id)).encode()


def list_text(
    module_id: str,
    timestamp: int,
    start_micros: int | None,
    end_micros: int | None,
    page_size: int,
    page_token: str,
) -> bytes:
    """What a ListPayments request's signature covers (paymentmodule.v1
    ListPayments' comment): the window as Unix microseconds, empty when unset."""
    return "\n".join(
        (
            "list",
            module_id,
            str(timestamp),
            "" if start_micros is None else str(start_micros),
            "" if end_micros is None else str(end_micros),
            str(page_size),
            page_token,
        )
    ).encode()


def mac(secret: bytes, text: bytes) -> str:
    return base64url.encode(hmac.new(secret, text, hashlib.sha256).digest())


def signature_holds(
    secret: bytes, text: bytes, signature: str, timestamp: int | None, now: datetime
) -> bool:
    """The signature is the MAC of text, and the timestamp within MAX_SKEW of now."""
    if timestamp is None or abs(now.timestamp() - timestamp) > MAX_SKEW.total_seconds():
        return False
    return hmac.compare_digest(mac(secret, text).encode(), signature.encode())


# Unix seconds in their one canonical spelling: int() would also take "+17...",
# " 17..." or "1_7...", each a different text under the same MAC.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")


def parse_timestamp(value: str) -> int | None:
    return int(value) if _TIMESTAMP.fullmatch(value) else None


@dataclass(frozen=True)
class ModuleEntry:
    """One line of a payment modules file: a module, its shared secret, and
    where the merchant reaches it (None: the merchant never calls it)."""

    module_id: str
    secret: bytes
    address: str | None


def parse_module_lines(text: str, source: str) -> list[ModuleEntry]:
    """A payment modules file (CONCERT_PAYMENT_MODULE_SECRETS_FILE, and the
    module's own CONCERT_PAYMENT_MODULE_SECRET_FILE): one
    `<module id> <base64url secret> [HOST:PORT]` per line; blank lines and
    `#` comments skipped. The address is optional so that files written
    before it existed still read the same."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) not in (2, 3):
                raise ValueError
            secret = base64url.decode(fields[1])
            address = _listen_address(fields[2]) if len(fields) == 3 else None
        except ValueError:
            raise ValueError(
                f"{source}:{number}: expected '<module id> <base64url secret> [HOST:PORT]'"
            ) from None
        entries.append(ModuleEntry(fields[0], secret, address))
    if not entries:
        raise ValueError(f"{source}: no payment module")
    return entries
