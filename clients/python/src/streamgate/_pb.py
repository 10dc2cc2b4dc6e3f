"""The generated stubs, imported in one place with a helpful error.

``streamgate.v1`` is generated from the repository's protos at build time
and never committed (see ``generate_protos.py``).
"""

try:
    from streamgate.v1 import entry_pb2, event_stream_pb2, event_stream_pb2_grpc
    from streamgate.v1 import stream_admin_pb2, stream_admin_pb2_grpc
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "streamgate's generated gRPC stubs (streamgate.v1) are missing: install the "
        "package with pip (which generates them), or run "
        "`python clients/python/generate_protos.py` in a source checkout"
    ) from err

__all__ = [
    "entry_pb2",
    "event_stream_pb2",
    "event_stream_pb2_grpc",
    "stream_admin_pb2",
    "stream_admin_pb2_grpc",
]
