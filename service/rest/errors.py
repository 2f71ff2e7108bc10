"""The one place where failures become HTTP answers.

Domain errors carry their own status (`XretError.http_status`) and kind; FastAPI's own failures
(validation, malformed JSON, unknown route, wrong method) are translated here into the same JSON shape
so a client never sees a stack trace or a framework-specific body. Routes under /v1/ answer in
OpenAI's error shape because OpenAI clients read `error.message` from it for their exceptions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import InvalidInput, XretError

log = logging.getLogger("xret.rest")

OPENAI_PREFIX = "/v1/"
STATE_KIND = "xret_error_kind"  # request.state key the metrics middleware reads the outcome from

# Extra headers by status: when to retry (429/503) and how to authenticate (401, RFC 9110 15.5.2).
_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": 'Bearer realm="xret"'},
    429: {"Retry-After": "1"},
    503: {"Retry-After": "1"},
}
# Kinds for failures FastAPI/Starlette raise before a route runs (unknown path, wrong method, ...).
_HTTP_KINDS: dict[int, str] = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
# Body-level pydantic errors that mean "this is not a JSON object" rather than a wrong field.
_NOT_AN_OBJECT = {"model_attributes_type", "model_type", "dict_type"}
# A message that starts with a request field ("input: ...", "texts[2]: ...") names the OpenAI `param`.
_FIELD_PREFIX = re.compile(r"^([A-Za-z_]+)(\[\d+\])*:")


def _openai_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_response(request: Request, status: int, kind: str, message: str, param: str | None = None) -> JSONResponse:
    """The error body every handler sends; records the kind for the request metrics."""
    setattr(request.state, STATE_KIND, kind)
    if request.url.path.startswith(OPENAI_PREFIX):
        if param is None and (match := _FIELD_PREFIX.match(message)):
            param = match.group(1)
        body: dict[str, Any] = {
            "error": {"message": message, "type": _openai_type(status), "param": param, "code": kind}
        }
    else:
        body = {"error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=_HEADERS.get(status))


def internal_error_response(request: Request) -> JSONResponse:
    """Generic 500: the details go to the log, never to the client."""
    return error_response(request, 500, "internal", "internal server error; the incident was logged")


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, XretError)
    return error_response(request, exc.http_status, exc.kind, exc.message)


def _field_path(loc: Sequence[int | str]) -> str:
    """('sentences', 0, 'lang') -> 'sentences[0].lang', the way the field is written in the request."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_validation(errors: Sequence[Any], content_type: str | None) -> tuple[str, str | None]:
    """One message naming every offending field, and the first field (for OpenAI's `param`)."""
    messages: list[str] = []
    first: str | None = None
    for err in errors:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        kind = err.get("type", "")
        if kind == "json_invalid":
            where = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
            messages.append(f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse')}{where}")
            continue
        if not loc:
            if kind == "missing":
                messages.append("request body is missing; send a JSON object with Content-Type: application/json")
            elif kind in _NOT_AN_OBJECT:
                hint = "" if "json" in (content_type or "") else f" (got Content-Type {content_type or 'none'})"
                messages.append(f"request body must be a JSON object sent as application/json{hint}")
            else:
                messages.append(str(err.get("msg", "invalid request")))
            continue
        field = _field_path(loc)
        first = first or str(loc[0])
        messages.append(f"{field}: {err.get('msg', 'invalid')}")
    return "; ".join(dict.fromkeys(messages)) or "invalid request", first


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_validation(exc.errors(), request.headers.get("content-type"))
    return error_response(request, InvalidInput.http_status, InvalidInput.kind, message, param)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Routing failures (unknown path, wrong method) and bodies that are not UTF-8, in the same shape as
    everything else."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    cause = exc.__cause__
    if status == 400 and isinstance(cause, UnicodeDecodeError):  # FastAPI's "error parsing the body"
        message = (
            f"request body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position {cause.start}); "
            "JSON must be sent as UTF-8 (RFC 8259)"
        )
        return error_response(request, InvalidInput.http_status, InvalidInput.kind, message)
    if status == 404:
        message = f"no endpoint at {request.method} {request.url.path}; the API is described at /docs"
    elif status == 405:
        allowed = (exc.headers or {}).get("allow") or (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    else:
        message = str(exc.detail)
    response = error_response(request, status, _HTTP_KINDS.get(status, "http_error"), message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are turned into 500s by the metrics middleware."""
    app.add_exception_handler(XretError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
