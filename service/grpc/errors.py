"""Domain errors -> gRPC status, in one table.

`service/errors.py` names each error's gRPC status as a string so the engine stays transport-free;
this is the only place those names become `grpc.StatusCode`s. A name missing here is a bug in the
table, so it is logged and answered as INTERNAL rather than guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from service.errors import XretError

log = logging.getLogger("xret.grpc")

GRPC_STATUS: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}
INTERNAL_MESSAGE = "internal error; the server log has the details"
ERROR_KIND_KEY = "xret-error-kind"


@dataclass(frozen=True)
class Status:
    """What the client receives: code, message, and `kind` (also the metrics outcome label)."""

    code: grpc.StatusCode
    message: str
    kind: str


def status_for(exc: Exception, method: str) -> Status:
    """Domain errors keep their message; anything else is a bug: logged here, generic to the client."""
    if isinstance(exc, XretError):
        code = GRPC_STATUS.get(exc.grpc_code)
        if code is not None:
            return Status(code, exc.message, exc.kind)
        log.error("no gRPC status for %s.grpc_code=%r", type(exc).__name__, exc.grpc_code)
        return Status(grpc.StatusCode.INTERNAL, exc.message, exc.kind)
    log.error("unexpected error in gRPC %s", method, exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "internal")
