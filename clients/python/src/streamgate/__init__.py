"""Python client for streamgate, the gRPC gateway to Redis Streams.

- ``Producer(addr).publish(stream, type, fields)`` appends events, batched
  over one ProduceStream (a future of the ID); ``produce`` is the unary call.
- ``Consumer(addr, stream, group, consumer)`` is a consumer-group member over
  one Consume stream: iterate it for entries, ``ack`` them once processed
  (or ``nack`` them for re-delivery), in band and batched; it extends the
  lease of entries it holds, reconnects by itself when a gateway restarts,
  and with ``reclaim=Reclaim(...)`` recovers the work of crashed peers.
  ``ordered=True`` (a partitioned stream) gives each partition one owner in
  the group and keeps each partition's acks in order;
  ``consumer.process(handler, concurrency=N)`` runs a handler on a thread
  pool, one partition's entries one after the other.
- ``Client(addr)`` exposes every RPC (nack, extend, reap, replay, tail,
  trim, admin) as a typed method returning the dataclasses of
  ``streamgate.model``.

Failed calls raise ``StreamgateError`` with the gRPC status ``code``. The
generated stubs live in ``streamgate.v1`` (built from the repository's
protos, never edited by hand).
"""

from .backoff import Backoff
from .client import Client, Producer, channel_options
from .consumer import Consumer
from .errors import StreamgateError
from .model import (
    ConsumerInfo,
    Entry,
    Event,
    GroupInfo,
    Heartbeat,
    PartitionInfo,
    PendingEntry,
    ReapResult,
    Reclaim,
    RemovedConsumer,
    StreamInfo,
    StreamSummary,
)
from .publisher import BatchSettings
from .tail import Tail

__all__ = [
    "Backoff",
    "BatchSettings",
    "Client",
    "Consumer",
    "ConsumerInfo",
    "Entry",
    "Event",
    "GroupInfo",
    "Heartbeat",
    "PartitionInfo",
    "PendingEntry",
    "Producer",
    "ReapResult",
    "Reclaim",
    "RemovedConsumer",
    "StreamInfo",
    "StreamSummary",
    "StreamgateError",
    "Tail",
    "channel_options",
]
