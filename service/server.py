"""Composition root: one engine, served over REST (uvicorn) and gRPC (grpc.aio) in one event loop.

Both front ends share the engine object, so a sentence added over gRPC is searchable over REST at
once and both see the same cache, limits and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from service.config import Settings
from service.engine import Engine
from service.errors import StartupError
from service.grpc.server import create_grpc_server
from service.rest.app import create_app

log = logging.getLogger("xret.server")


def _bind_socket(host: str, port: int) -> socket.socket:
    """Bind the REST socket ourselves so port 0 resolves to a known free port before start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that name TCP, and without it every
    # small REST response waited ~40 ms for Nagle/delayed-ACK (measured in benchmarks/PERFORMANCE.md).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:  # port taken, host not ours: the operator's setting, said in one line
        sock.close()
        raise _cannot_listen(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def _cannot_listen(host: str, port: int, exc: OSError) -> StartupError:
    return StartupError(f"cannot listen for REST on {host}:{port}: {exc.strerror or exc}")


def _listen(sock: socket.socket) -> None:
    """Start accepting: only once the engine is up, so clients are refused (not left hanging) while it loads."""
    try:
        sock.listen(2048)
    except OSError as exc:
        host, port = sock.getsockname()[:2]
        raise _cannot_listen(host, port, exc) from None


async def run_servers(
    settings: Settings,
    stop: asyncio.Event,
    on_ready: Callable[[int, int], None] | None = None,
) -> None:
    """Start the engine and both servers, call on_ready(rest_port, grpc_port), run until `stop` is set."""
    sock = _bind_socket(settings.host, settings.port)  # before the models load: a taken port fails at once
    engine = Engine(settings)
    try:
        await engine.start()
    except BaseException:
        sock.close()
        raise
    rest_port = sock.getsockname()[1]
    try:
        _listen(sock)
        grpc_server, grpc_port = create_grpc_server(engine, settings.host, settings.grpc_port)
    except BaseException:
        sock.close()
        await engine.stop()
        raise
    config = uvicorn.Config(
        create_app(engine), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    http = uvicorn.Server(config)
    await grpc_server.start()
    http_task = asyncio.create_task(http.serve(sockets=[sock]))
    try:
        while not http.started:
            if http_task.done():
                await http_task  # surfaces why uvicorn could not start
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("xret serving REST on %s:%d and gRPC on %s:%d", settings.host, rest_port, settings.host, grpc_port)
        if on_ready is not None:
            on_ready(rest_port, grpc_port)
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_wait, http_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
    finally:
        http.should_exit = True
        await grpc_server.stop(grace=2)
        await http_task
        sock.close()
        await engine.stop()


@dataclass
class RunningService:
    """Addresses of a live service; `rest` is a base URL, `grpc` a host:port target."""

    rest: str
    grpc: str
    settings: Settings


@contextmanager
def serve_in_thread(settings: Settings, timeout_s: float = 300) -> Iterator[RunningService]:
    """Run REST + gRPC in a background thread (demo, tests, benchmarks); stop and join on exit.

    Start-up errors are re-raised in the caller's thread, so a bad repository fails the caller
    with the same StartupError that `serve` prints.
    """
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    ports: list[int] = []
    errors: list[BaseException] = []

    def on_ready(rest_port: int, grpc_port: int) -> None:
        ports.extend([rest_port, grpc_port])
        ready.set()

    def main() -> None:
        try:
            loop.run_until_complete(run_servers(settings, stop, on_ready))
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="xret-server", daemon=True)
    thread.start()
    ready.wait(timeout=timeout_s)
    if errors:
        raise errors[0]
    if not ports:
        raise RuntimeError(f"service did not start within {timeout_s} s")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    try:
        yield RunningService(rest=f"http://{host}:{ports[0]}", grpc=f"{host}:{ports[1]}", settings=settings)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
    if errors:
        raise errors[0]
