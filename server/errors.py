"""Failures as precise gRPC statuses with google.rpc details (AIP-193).

Use cases raise a ServiceError subclass; the error interceptor turns it into a
status carrying an ErrorInfo (always), a BadRequest (for invalid fields) and a
RetryInfo (when a retry later may succeed). Nothing else should build statuses.

Every reason is a value of the contract's enum concert.v1.ErrorReason
(protos/concert/v1/error_reason.proto), raised by its generated name, e.g.
ErrorReason.ERROR_REASON_TOKEN_EXPIRED, the same name Go, Java or TypeScript
clients switch on. A misspelt name fails mypy (scripts/lint), where a misspelt
string would have gone out on the wire as a new reason; ServiceError takes no
string. The wire string is the name without its prefix (wire_reason), as the
enum's comment promises clients. tests/unit/test_error_reasons.py checks that
server/ raises every value and types no reason string.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NewType

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from concert.v1.error_reason_pb2 import ErrorReason

ERROR_DOMAIN = "concert.v1"
REASON_PREFIX = "ERROR_REASON_"


# A reason of another service's contract: the sandbox payment module
# (server/payment_module, domain paymentmodule.v1) documents its own reasons in
# its proto and raises them through the same error classes, wrapped in this
# type so that no bare string can pass for a concert.v1 reason.
ForeignReason = NewType("ForeignReason", str)


def wire_reason(reason: ErrorReason | ForeignReason) -> str:
    """ErrorInfo.reason (and refund_reason) for an ErrorReason: its name without the prefix."""
    if isinstance(reason, str):
        return reason
    return ErrorReason.Name(reason).removeprefix(REASON_PREFIX)


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """A failure the caller should see, with its status code and reason."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        reason: ErrorReason | ForeignReason,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.retry_after_seconds = retry_after_seconds

    def to_status(self, domain: str = ERROR_DOMAIN) -> grpc.Status:
        """The status; `domain` names the service that answers (the sandbox
        payment module answers in its own, paymentmodule.v1)."""
        return _status(
            self.code,
            wire_reason(self.reason),
            domain,
            self.message,
            tuple(sorted(self.metadata.items())),
            self.violations,
            self.retry_after_seconds,
        )


# Built statuses by what they say: a storm's refusals (the hashing line full, a
# spent budget) repeat a few statuses thousands of times a second, and building
# one (its details packed, the Status serialized) cost about as much of the
# event loop as the rest of the refusal. A grpc.Status is immutable.
@functools.lru_cache(maxsize=1024)
def _status(
    code: grpc.StatusCode,
    reason: str,
    domain: str,
    message: str,
    metadata: tuple[tuple[str, str], ...],
    violations: tuple[FieldViolation, ...],
    retry_after_seconds: float | None,
) -> grpc.Status:
    details = [error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata))]
    if violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in violations
                ]
            )
        )
    if retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(retry_after_seconds, 0.0) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    return rpc_status.to_status(status)


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: Iterable[FieldViolation],
        reason: ErrorReason | ForeignReason = ErrorReason.ERROR_REASON_INVALID_ARGUMENT,
    ):
        violations = tuple(violations)
        fields = ", ".join(v.field for v in violations)
        super().__init__(reason, f"invalid request: {fields}", violations=violations)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(ServiceError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Violations:
    """Collects every bad field of a request, so one reply names them all."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def __bool__(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise InvalidArgument(self._items)
