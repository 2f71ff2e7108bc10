"""FastAPI application factory: routes, error handlers and the request middleware over one engine.

Building the app touches nothing but the engine object, so the OpenAPI document can be produced
(and snapshot-tested) without loading a model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.engine import Engine
from service.errors import TooLarge
from service.metrics import Metrics
from service.rest.errors import STATE_KIND, error_response, install_error_handlers, internal_error_response
from service.rest.routes import create_router

log = logging.getLogger("xret.rest")

DESCRIPTION = (
    "Cross-lingual sentence retrieval: embed texts with an ensemble of encoders, index sentences in "
    "any language, and search them from any other. Errors always have the shape "
    '`{"error": {"type": ..., "message": ...}}` (OpenAI\'s shape under /v1).'
)


def _package_version() -> str:
    try:
        return version("xret")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


def max_body_bytes(settings: Settings) -> int:
    """Largest request body: room for the text limits at JSON's worst case, so the text limits
    (with their clearer messages) are what a legitimate request hits first.

    A character can take 12 bytes in JSON (a surrogate pair written as two \\uXXXX escapes); 4 KiB per
    text covers id, language and metadata, and 64 KiB the rest of the envelope.
    """
    return settings.max_texts_per_request * (settings.max_chars_per_text * 12 + 4096) + 65536


class RequestMiddleware:
    """Per request: reject oversized bodies, count outcome and latency, turn crashes into a logged 500.

    A plain ASGI middleware (not BaseHTTPMiddleware) so streaming and cancellation keep working and
    the route template (not the raw path) labels the metrics, keeping their cardinality bounded.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        status = 500
        response_started = cancelled = False

        async def send_and_watch(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            receive = await self._limit_body(scope, receive, send_and_watch)
            if not response_started:
                await self.app(scope, receive, send_and_watch)
        except asyncio.CancelledError:  # server shutting down mid-request: neither ok nor a crash
            cancelled = True
            raise
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not response_started:
                await internal_error_response(Request(scope))(scope, receive, send_and_watch)
        finally:
            route = scope.get("route")  # the template ("/sentences/{sentence_id}"), never the raw path
            method = getattr(route, "path_format", None) or "unmatched"
            kind = scope.get("state", {}).get(STATE_KIND, "internal")
            outcome = "cancelled" if cancelled and not response_started else "ok" if status < 400 else kind
            self.metrics.requests.labels("rest", method, outcome).inc()
            self.metrics.latency.labels("rest", method).observe(time.perf_counter() - started_at)

    async def _limit_body(self, scope: Scope, receive: Receive, send: Send) -> Receive:
        """Answer 413 for a too-large body, judged by Content-Length or, when chunked, by reading it."""
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_body:
                await self._too_large(scope, send, int(declared))
            return receive
        chunks: list[Message] = []
        total = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_body:
                await self._too_large(scope, send, None)
                return receive
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        return replay

    async def _too_large(self, scope: Scope, send: Send, size: int | None) -> None:
        """`size` is None for a chunked body, which is not read beyond the limit."""
        over = f"is {size} bytes, the limit is" if size is not None else "is over the limit of"
        exc = TooLarge(
            f"request body {over} {self.max_body} bytes (derived from max_texts_per_request and max_chars_per_text)"
        )
        response = error_response(Request(scope), exc.http_status, exc.kind, exc.message)
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def create_app(engine: Engine) -> FastAPI:
    """The REST API over `engine`; the engine's lifecycle stays with the caller."""
    app = FastAPI(title="xret", version=_package_version(), description=DESCRIPTION)
    app.include_router(create_router(engine))
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, metrics=engine.metrics, max_body=max_body_bytes(engine.settings))
    return app
