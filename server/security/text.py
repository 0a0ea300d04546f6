"""Refuse NUL characters in any string field of any request, naming each field.

PostgreSQL text cannot hold U+0000: a NUL that reached a query would fail it
with DataError, which is a bug (INTERNAL), not the caller's error. No valid
request has one, so this one check in front of every method turns it into
INVALID_ARGUMENT with a BadRequest that names the field (`dates[2].title`),
whatever the method and however deep the field.

Only message types that can reach a string are walked, so a CreateConcert of
a million seats (no strings) costs nothing here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server.errors import Violations
from server.interceptors import Call, Layer, StreamProceed, UnaryProceed

NUL = "\x00"


@cache
def _may_hold_text(descriptor: Descriptor) -> bool:
    """Whether a message of this type can contain a string field at any depth."""
    return _reaches_text(descriptor, frozenset())


def _reaches_text(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    seen = seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return True
        if field.message_type is not None and _reaches_text(field.message_type, seen):
            return True
    return False


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of the string fields (at any depth) that contain a NUL."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            for i, text in enumerate(values):
                if NUL in text:
                    found.append(f"{path}[{i}]" if field.is_repeated else path)
        elif field.message_type is not None and _may_hold_text(field.message_type):
            if field.message_type.GetOptions().map_entry:
                continue  # no map fields in concert.v1
            if field.is_repeated:
                for i, item in enumerate(value):
                    found.extend(nul_fields(item, f"{path}[{i}]."))
            else:
                found.extend(nul_fields(value, path + "."))
    return found


def check_request_text(request: Any) -> None:
    if not isinstance(request, Message) or not _may_hold_text(request.DESCRIPTOR):
        return
    violations = Violations()
    for path in nul_fields(request):
        violations.add(path, "must not contain NUL characters")
    violations.raise_if_any()


class RequestTextLayer(Layer):
    """Applies to every concert.v1 method (the Layer default)."""

    async def around(self, call: Call, proceed: UnaryProceed) -> Any:
        check_request_text(call.request)
        return await proceed(call)

    async def around_stream(self, call: Call, proceed: StreamProceed) -> AsyncIterator[Any]:
        check_request_text(call.request)
        async for item in proceed(call):
            yield item
