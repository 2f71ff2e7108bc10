"""One domain error hierarchy for the whole service.

Front ends never invent status codes: each error class names its HTTP status and its gRPC status
*name* here, and `rest/` and `grpc/` translate those in one table each. Keeping gRPC names as strings
keeps this module a leaf (no grpc import), so the engine can raise without knowing the transport.
"""

from __future__ import annotations


class XretError(Exception):
    """Base of every error the service reports to a client; `message` is safe to show to users."""

    http_status = 500
    grpc_code = "INTERNAL"
    kind = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(XretError):
    """The request is well-formed transport-wise but its content is wrong (empty text, bad k, ...)."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"
    kind = "invalid_input"


class TooLarge(XretError):
    """Too many texts or too many characters; the message names the limit so clients can split."""

    http_status = 413
    grpc_code = "INVALID_ARGUMENT"
    kind = "too_large"


class NotFound(XretError):
    """A sentence id (or other named resource) does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    kind = "not_found"


class Conflict(XretError):
    """An id that must be new already exists."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"
    kind = "conflict"


class Overloaded(XretError):
    """The batching queue is full: the client should back off instead of queueing forever."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    kind = "overloaded"


class Unauthenticated(XretError):
    """A write endpoint was called without an API key while one is configured."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    kind = "unauthenticated"


class PermissionDenied(XretError):
    """A write endpoint was called with the wrong API key."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    kind = "permission_denied"


class Unavailable(XretError):
    """The engine is starting or stopping and cannot answer yet."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    kind = "unavailable"


class StartupError(Exception):
    """Start-up refused (bad repository, mismatched index, ...): printed as one line, then exit 1."""
