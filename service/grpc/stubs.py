"""The generated protobuf/gRPC modules, generated first if missing or stale.

Importing stubs through this module (never ``_gen`` directly) means a fresh checkout works without a
separate build step: the generation cost is paid once, then it is a hash check of the .proto files.
"""

from service.grpc.codegen import ensure_stubs

ensure_stubs()

from service.grpc._gen.xret.v1 import xret_pb2, xret_pb2_grpc  # noqa: E402

__all__ = ["xret_pb2", "xret_pb2_grpc"]
