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

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc.aio import ServicerContext

from server.errors import Violations
from server.interceptors import OWN_PACKAGE, method_service, wrap_handler

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


class RequestTextInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not method_service(handler_call_details.method).startswith(
            OWN_PACKAGE
        ):
            return handler

        async def around_unary(request: Any, context: ServicerContext, proceed: Any) -> Any:
            check_request_text(request)
            return await proceed()

        async def around_stream(
            request: Any, context: ServicerContext, proceed: Any
        ) -> AsyncIterator[Any]:
            check_request_text(request)
            async for item in proceed():
                yield item

        return wrap_handler(handler, around_unary, around_stream)
