"""The REST listening socket must name TCP, or asyncio leaves Nagle on and small replies stall ~40 ms."""

from __future__ import annotations

import socket

from service.server import _bind_socket


def test_rest_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    sock = _bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()
