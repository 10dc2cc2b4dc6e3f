"""Plain, typed values for what the gateway sends and receives.

The generated protobuf messages work but are awkward to use: proto3
``optional`` fields need ``HasField``, maps are protobuf containers and
messages are mutable. These frozen dataclasses are what the public API takes
and returns; each ``from_pb`` is the one place a message is converted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from ._pb import entry_pb2, event_stream_pb2, stream_admin_pb2


@dataclass(frozen=True)
class Event:
    """An event to produce: its type, user fields and partition key.

    The field names ``type``, ``ts_ms`` and ``partition_key`` are reserved
    (the gateway writes them) and are rejected with INVALID_ARGUMENT.
    """

    type: str
    fields: Mapping[str, str] = field(default_factory=dict)
    binary_fields: Mapping[str, bytes] = field(default_factory=dict)
    #: Makes a retried Produce safe: an event whose key was already produced
    #: to the stream within the gateway's ``--dedup-window-ms`` (default
    #: 24 h) is not written again, and its original ID is returned. Empty:
    #: no deduplication.
    idempotency_key: str = ""
    #: Partition key (at most 1024 bytes), stored with the entry in the
    #: reserved Redis field ``partition_key`` and returned as ``Entry.key``.
    #: On a partitioned stream, events with one key go to one partition, in
    #: production order. Empty: none.
    key: str = ""

    def to_pb(self) -> entry_pb2.Event:
        return entry_pb2.Event(
            type=self.type,
            fields=dict(self.fields),
            binary_fields=dict(self.binary_fields),
            idempotency_key=self.idempotency_key,
            key=self.key,
        )


@dataclass(frozen=True)
class Entry:
    """A stream entry as a reader receives it.

    ``delivery_count`` is Redis' delivery counter for the group (1 on a first
    delivery, more after re-deliveries, reclaims and reaps); 0 where no group
    is involved (Replay, Tail) or the count is unknown. ``redelivered`` is
    True when this delivery is a re-delivery (``pending_first``, reclaim,
    Nack): the entry may have been processed before, so handlers must be
    idempotent. ``key`` is the event's partition key (empty if it has none);
    ``partition`` the partition the entry lives in (0 on a plain stream).
    """

    id: str
    type: str
    ts_ms: int
    fields: Mapping[str, str]
    binary_fields: Mapping[str, bytes]
    delivery_count: int
    redelivered: bool = False
    partition: int = 0
    key: str = ""

    @classmethod
    def from_pb(cls, m: entry_pb2.Entry) -> Entry:
        return cls(
            id=m.id,
            type=m.type,
            ts_ms=m.ts_ms,
            fields=dict(m.fields),
            binary_fields=dict(m.binary_fields),
            delivery_count=m.delivery_count,
            redelivered=m.redelivered,
            partition=m.partition,
            key=m.key,
        )


@dataclass(frozen=True)
class Heartbeat:
    """A keep-alive of a Subscribe or Tail stream with nothing to deliver:
    the gateway's wall clock (Unix ms) when it sent it."""

    server_time_ms: int

    @classmethod
    def from_pb(cls, m: entry_pb2.Heartbeat) -> Heartbeat:
        return cls(server_time_ms=m.server_time_ms)


@dataclass(frozen=True)
class Reclaim:
    """Automatic recovery of a subscription: every ``interval_ms`` (0:
    ``min_idle_ms / 2``) it claims the group's entries idle for at least
    ``min_idle_ms`` (a crashed peer's work, > 0) and entries whose Nack delay
    has passed, and delivers them with ``redelivered`` set."""

    min_idle_ms: int
    interval_ms: int = 0

    def to_pb(self) -> event_stream_pb2.Reclaim:
        return event_stream_pb2.Reclaim(min_idle_ms=self.min_idle_ms, interval_ms=self.interval_ms)


@dataclass(frozen=True)
class ReapResult:
    """What a Reap claimed.

    ``deleted_ids`` were pending but their entries no longer exist (trimmed);
    Redis already dropped them from the PEL. ``next_start_id`` continues the
    scan; ``"0-0"`` means the whole PEL was scanned.
    """

    claimed: list[Entry]
    deleted_ids: list[str]
    next_start_id: str

    @classmethod
    def from_pb(cls, m: event_stream_pb2.ReapResponse) -> ReapResult:
        return cls(
            claimed=[Entry.from_pb(e) for e in m.claimed],
            deleted_ids=list(m.deleted_ids),
            next_start_id=m.next_start_id,
        )


@dataclass(frozen=True)
class StreamInfo:
    """A stream's size and ID bounds (XINFO STREAM). IDs are empty when the
    stream is empty. ``partitions`` is 0 for a plain stream; for a
    partitioned one ``length`` and ``group_count`` are summed over the
    partitions and the IDs are partition-qualified."""

    length: int
    first_entry_id: str
    last_entry_id: str
    last_generated_id: str
    group_count: int
    partitions: int = 0

    @classmethod
    def from_pb(cls, m: stream_admin_pb2.DescribeStreamResponse) -> StreamInfo:
        return cls(
            length=m.length,
            first_entry_id=m.first_entry_id,
            last_entry_id=m.last_entry_id,
            last_generated_id=m.last_generated_id,
            group_count=m.group_count,
            partitions=m.partitions,
        )


@dataclass(frozen=True)
class PartitionInfo:
    """One partition of a stream, as ListPartitions reports it: its Redis
    ``key``, length and newest entry (``ms-seq``, empty if it is empty);
    with a group, the ordered consumer that ``owner``s it (empty: none),
    the group's ``pending`` entries in it and its ``lag`` (None where Redis
    cannot tell, and without a group)."""

    partition: int
    key: str
    length: int
    last_entry_id: str
    owner: str
    pending: int
    lag: Optional[int]

    @classmethod
    def from_pb(cls, m: stream_admin_pb2.PartitionInfo) -> PartitionInfo:
        return cls(
            partition=m.partition,
            key=m.key,
            length=m.length,
            last_entry_id=m.last_entry_id,
            owner=m.owner,
            pending=m.pending,
            lag=m.lag if m.HasField("lag") else None,
        )


@dataclass(frozen=True)
class StreamSummary:
    """A stream under the gateway's key prefix, as ListStreams reports it.
    ``last_entry_id`` is empty when the stream is empty."""

    name: str
    length: int
    last_entry_id: str
    group_count: int

    @classmethod
    def from_pb(cls, m: stream_admin_pb2.StreamSummary) -> StreamSummary:
        return cls(
            name=m.name,
            length=m.length,
            last_entry_id=m.last_entry_id,
            group_count=m.group_count,
        )


@dataclass(frozen=True)
class GroupInfo:
    """A consumer group. ``lag`` (entries not yet delivered to the group) and
    ``entries_read`` are None when Redis cannot tell."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: Optional[int]
    entries_read: Optional[int]

    @classmethod
    def from_pb(cls, m: stream_admin_pb2.GroupInfo) -> GroupInfo:
        return cls(
            name=m.name,
            consumers=m.consumers,
            pending=m.pending,
            last_delivered_id=m.last_delivered_id,
            lag=m.lag if m.HasField("lag") else None,
            entries_read=m.entries_read if m.HasField("entries_read") else None,
        )


@dataclass(frozen=True)
class ConsumerInfo:
    """A consumer of a group. ``idle_ms`` counts from its last read or claim
    attempt; ``inactive_ms`` from its last successful one (None before Redis
    7.2 or if it never succeeded)."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: Optional[int]

    @classmethod
    def from_pb(cls, m: stream_admin_pb2.ConsumerInfo) -> ConsumerInfo:
        return cls(
            name=m.name,
            pending=m.pending,
            idle_ms=m.idle_ms,
            inactive_ms=m.inactive_ms if m.HasField("inactive_ms") else None,
        )


@dataclass(frozen=True)
class PendingEntry:
    """An entry delivered to ``consumer`` and not yet acknowledged."""

    id: str
    consumer: str
    idle_ms: int
    delivery_count: int

    @classmethod
    def from_pb(cls, m: stream_admin_pb2.PendingEntry) -> PendingEntry:
        return cls(id=m.id, consumer=m.consumer, idle_ms=m.idle_ms, delivery_count=m.delivery_count)


@dataclass(frozen=True)
class RemovedConsumer:
    """Outcome of RemoveConsumer: whether it was removed and how many of its
    pending entries went to ``handover_to``."""

    removed: bool
    handed_over: int
