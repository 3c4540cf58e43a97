"""The one error hierarchy of every gRPC service, and its mapping to gRPC status codes.

Service and repository code raises these; the error-mapping interceptor
(`services.runtime.interceptors.ErrorMappingInterceptor`) is the only place that turns them
into a gRPC status. The message of a `ServiceError` is sent to the caller, so it must say what
was wrong with the request and never include internals; anything that is not a `ServiceError`
becomes INTERNAL with a generic message (the details go to the log with the request id).

Field violations of `InvalidArgument` travel as a standard `google.rpc.BadRequest` in the
rich status (`grpc-status-details-bin` trailer), which `grpc_status.rpc_status.from_call`
decodes on the client side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# Names follow the gRPC status codes they map to (hence no `Error` suffix, ruff N818).
__all__ = [
    "AlreadyExists",
    "Conflict",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
    "rich_status",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: `field` is a dotted path (`basal_schedule[2].rate_u_per_h`)."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of every error a service reports to its caller."""

    status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` for this error (code, message, typed details)."""
        return status_pb2.Status(code=self.status_code.value[0], message=self.message)


class InvalidArgument(ServiceError):  # noqa: N818
    """The request itself is malformed or out of bounds; retrying it unchanged cannot succeed."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: Iterable[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)

    def to_status(self) -> status_pb2.Status:
        status = super().to_status()
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad_request)
            status.details.append(detail)
        return status


class NotFound(ServiceError):  # noqa: N818
    """The addressed object does not exist (or the caller may not know that it does)."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):  # noqa: N818
    """An object with the same identity was created before."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(ServiceError):  # noqa: N818
    """A concurrent change won (optimistic concurrency, sequence mismatch); re-read and retry."""

    status_code = grpc.StatusCode.ABORTED


class FailedPrecondition(ServiceError):  # noqa: N818
    """The system is not in a state that allows this (e.g. pump suspended, stale CGM data)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(ServiceError):  # noqa: N818
    """The caller is known but may not do this."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):  # noqa: N818
    """The caller did not prove who it is."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServiceError):  # noqa: N818
    """A quota or rate limit was hit."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):  # noqa: N818
    """A dependency is down for now; the same request may succeed later."""

    status_code = grpc.StatusCode.UNAVAILABLE


_INTERNAL_MESSAGE = "internal error"


def rich_status(error: BaseException) -> status_pb2.Status:
    """The status to send for any exception: its own for a `ServiceError`, else INTERNAL."""
    if isinstance(error, ServiceError):
        return error.to_status()
    return status_pb2.Status(code=code_pb2.INTERNAL, message=_INTERNAL_MESSAGE)
