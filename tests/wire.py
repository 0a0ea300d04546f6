"""Protobuf's wire format by hand, for tests that send bodies no message would
serialize (invalid UTF-8, truncated or oversized fields)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """A base-128 varint, least significant group first."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    """Field `number` (wire type 2: string, bytes or message) holding `data`."""
    return varint(number << 3 | 2) + varint(len(data)) + data
