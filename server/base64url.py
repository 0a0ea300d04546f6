"""Unpadded base64url (RFC 4648 §5), the text form of every opaque string we hand out:
session credentials, queue tokens, page tokens and stored password hashes."""

from __future__ import annotations

import base64
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode(text: str) -> bytes:
    """The bytes of `text`; ValueError unless it is exactly what encode() makes.

    Strict: the standard decoder skips characters outside the alphabet and
    ignores stray trailing bits, so `token + "!!"` (or a last character
    changed within its unused bits) decoded to the same token. Only the one
    canonical spelling of each byte string is accepted.
    """
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if encode(data) != text:
        raise ValueError("not canonical base64url")
    return data
