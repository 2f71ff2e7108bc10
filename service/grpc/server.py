"""The grpc.aio server: Retrieval, the standard health service and server reflection.

Health and reflection are what generic tooling expects (grpc_health_probe, Kubernetes gRPC probes,
grpcurl/Postman without a local .proto), so clients need nothing from this repository to check or
explore the service.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.engine import Engine
from service.errors import StartupError
from service.grpc.servicer import SERVICE_NAME, retrieval_handler

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVER_OPTIONS = [
    # 256 texts x 2000 chars, or 256 embeddings x a few thousand floats, fit with room to spare.
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Without this a second server on the same fixed port binds silently and steals half the calls.
    ("grpc.so_reuseport", 0),
]
_background: set[asyncio.Task[None]] = set()


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def create_grpc_server(engine: Engine, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Build (not start) the server bound to host:port; returns it and the bound port (port 0 = any free).

    Call from the event loop that will run the server, after `engine.start()`: health reports SERVING
    for "" and xret.v1.Retrieval from the first call the server answers.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((retrieval_handler(engine),))
    try:
        bound = server.add_insecure_port(_target(host, port))
    except RuntimeError as exc:
        raise StartupError(f"cannot listen for gRPC on {_target(host, port)}: {exc}") from None

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if engine.repo is not None
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", SERVICE_NAME):
        # The aio servicer's setter is a coroutine; scheduled now, it runs before the server can
        # answer anything because serving needs this same loop.
        task = asyncio.get_running_loop().create_task(health_servicer.set(service, status))
        _background.add(task)
        task.add_done_callback(_background.discard)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return server, bound
