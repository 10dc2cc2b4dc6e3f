"""Python client for streamgate, the gRPC gateway to Redis Streams.

- ``Producer(addr).produce(stream, type, fields)`` appends events.
- ``Consumer(addr, stream, group, consumer)`` is a consumer-group member:
  iterate it for entries, ``ack`` them once processed; it reconnects by
  itself when a gateway restarts.
- ``Client(addr)`` exposes every RPC (reap, replay, trim, admin) as a typed
  method returning the dataclasses of ``streamgate.model``.

Failed calls raise ``StreamgateError`` with the gRPC status ``code``. The
generated stubs live in ``streamgate.v1`` (built from the repository's
protos, never edited by hand).
"""

from .client import Client, Producer, channel_options
from .consumer import Backoff, Consumer
from .errors import StreamgateError
from .model import (
    ConsumerInfo,
    Entry,
    Event,
    GroupInfo,
    PendingEntry,
    ReapResult,
    RemovedConsumer,
    StreamInfo,
)

__all__ = [
    "Backoff",
    "Client",
    "Consumer",
    "ConsumerInfo",
    "Entry",
    "Event",
    "GroupInfo",
    "PendingEntry",
    "Producer",
    "ReapResult",
    "RemovedConsumer",
    "StreamInfo",
    "StreamgateError",
    "channel_options",
]
