"""Reading credentials from call metadata (`authorization: Bearer <value>`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_CREDENTIAL_LENGTH = 2048


def bearer_credential(metadata: Iterable[Any] | None) -> str | None:
    """The bearer value of the `authorization` metadata, or None when absent.

    Accepts the metadata of a HandlerCallDetails or of a ServicerContext
    (a sequence of key/value pairs). An oversized value counts as absent-and-bad:
    callers treat "" as a malformed credential.
    """
    for item in metadata or ():
        key, value = item[0], item[1]
        if key != "authorization":
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, credential = value.partition(" ")
        if scheme.lower() != "bearer" or len(credential) > MAX_CREDENTIAL_LENGTH:
            return ""
        return credential.strip()
    return None
