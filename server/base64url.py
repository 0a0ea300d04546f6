"""Unpadded base64url (RFC 4648 §5), the text form of every opaque string we hand out:
session credentials, queue tokens, page tokens and stored password hashes."""

from __future__ import annotations

import base64


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode(text: str) -> bytes:
    """The bytes of `text`; ValueError if it is not base64url."""
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
