"""The REST listening socket must name TCP, or asyncio leaves Nagle on and small replies stall ~40 ms; a port
that cannot be had is a one-line start-up error, found before any model loads."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from service.config import Settings
from service.errors import StartupError
from service.server import _bind_socket, run_servers


def test_rest_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    sock = _bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_a_taken_port_is_a_startup_error_before_the_models_load(tmp_path: Path) -> None:
    """The repository does not exist: had the engine started first, that would be the error, after a load."""
    taken = _bind_socket("127.0.0.1", 0)
    taken.listen()
    try:
        port = taken.getsockname()[1]
        settings = Settings(repo=tmp_path / "no-repo", index=tmp_path / "index", port=port, redis_url=None)
        started = time.perf_counter()
        with pytest.raises(StartupError, match=f"cannot listen for REST on 127.0.0.1:{port}: Address already in use"):
            asyncio.run(run_servers(settings, asyncio.Event()))
        assert time.perf_counter() - started < 5
    finally:
        taken.close()
