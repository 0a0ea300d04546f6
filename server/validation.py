"""Field checks shared by every servicer: ids, request ids, page tokens.

Each check records a FieldViolation instead of raising, so that one reply
names every bad field; call violations.raise_if_any() when done.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from server import base64url
from server.errors import Violations

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_LENGTH = 512


def parse_uuid(violations: Violations, field: str, value: str) -> uuid.UUID | None:
    """A required UUID field."""
    if not value:
        violations.add(field, "required")
        return None
    if len(value) > 64:
        violations.add(field, "must be a UUID")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        violations.add(field, "must be a UUID")
        return None


def parse_request_id(
    violations: Violations, value: str, field: str = "request_id"
) -> uuid.UUID | None:
    """An optional AIP-155 request id: empty means no deduplication."""
    if not value:
        return None
    return parse_uuid(violations, field, value)


def parse_page_size(violations: Violations, value: int, field: str = "page_size") -> int:
    """AIP-158: 0 means the default, above the maximum is coerced down."""
    if value < 0:
        violations.add(field, "must not be negative")
        return DEFAULT_PAGE_SIZE
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def encode_page_token(position: dict[str, Any]) -> str:
    """An opaque cursor: where the next page starts (keyset pagination)."""
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64url.encode(raw)


def decode_page_token(
    violations: Violations, value: str, expected_keys: frozenset[str], field: str = "page_token"
) -> dict[str, Any] | None:
    """The cursor from encode_page_token, or None for the first page."""
    if not value:
        return None
    try:
        if len(value) > MAX_PAGE_TOKEN_LENGTH:
            raise ValueError
        position = json.loads(base64url.decode(value))
        if not isinstance(position, dict) or set(position) != expected_keys:
            raise ValueError
        return position
    except ValueError:
        violations.add(field, "not a page token this method returned")
        return None
