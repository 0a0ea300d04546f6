"""A ServiceError's status says exactly what the error says, however often it is built.

Statuses are built once per distinct error and reused (a storm's refusals repeat a
few of them thousands of times a second): errors differing in any part must not
share one.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from server.errors import (
    ErrorReason,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)


def _decoded(status: grpc.Status) -> tuple[grpc.StatusCode, str, list[object]]:
    [value] = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    decoded = status_pb2.Status.FromString(value)
    details: list[object] = []
    for holder in decoded.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if holder.Is(kind.DESCRIPTOR):
                detail = kind()
                holder.Unpack(detail)
                details.append(detail)
    assert decoded.message == status.details
    return status.code, status.details, details


def test_a_status_carries_every_part_of_its_error() -> None:
    error = ResourceExhausted(
        ErrorReason.ERROR_REASON_TOO_MANY_ATTEMPTS,
        "wait",
        metadata={"limit": "5"},
        retry_after_seconds=1.5,
    )
    code, message, [info, retry] = _decoded(error.to_status())
    assert (code, message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "wait")
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "TOO_MANY_ATTEMPTS",
        "concert.v1",
        {"limit": "5"},
    )
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000
    _, _, [info_elsewhere, _] = _decoded(error.to_status("paymentmodule.v1"))
    assert isinstance(info_elsewhere, error_details_pb2.ErrorInfo)
    assert info_elsewhere.domain == "paymentmodule.v1"


def test_errors_that_differ_in_any_part_get_statuses_of_their_own() -> None:
    def busy(**changes: object) -> ResourceExhausted:
        parts: dict[str, object] = {
            "reason": ErrorReason.ERROR_REASON_PASSWORD_HASHING_BUSY,
            "message": "busy",
            "metadata": {"a": "1"},
            "retry_after_seconds": 1.0,
        }
        parts.update(changes)
        return ResourceExhausted(**parts)  # type: ignore[arg-type]

    variants = [
        busy(),
        busy(reason=ErrorReason.ERROR_REASON_TOO_MANY_ATTEMPTS),
        busy(message="busy!"),
        busy(metadata={"a": "2"}),
        busy(metadata={"a": "1", "b": "1"}),
        busy(retry_after_seconds=2.0),
        busy(retry_after_seconds=None),
        Unavailable(ErrorReason.ERROR_REASON_PASSWORD_HASHING_BUSY, "busy", metadata={"a": "1"}),
    ]
    statuses = [_decoded(v.to_status()) for v in variants]
    for _ in range(2):  # built again: the same answers
        assert [_decoded(v.to_status()) for v in variants] == statuses
    assert len({repr(s) for s in statuses}) == len(variants)
    # The same error, built twice, is one status (the cached one).
    assert busy().to_status() is busy().to_status()


def test_invalid_arguments_name_their_fields_in_order() -> None:
    error = InvalidArgument([FieldViolation("email", "required"), FieldViolation("password", "x")])
    code, _, [_, bad_request] = _decoded(error.to_status())
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email", "required"),
        ("password", "x"),
    ]
    other = InvalidArgument([FieldViolation("email", "too long")])
    _, _, [_, other_request] = _decoded(other.to_status())
    assert isinstance(other_request, error_details_pb2.BadRequest)
    assert [v.description for v in other_request.field_violations] == ["too long"]
