"""``Client``: every RPC of the gateway as a typed method, and ``Producer``.

A ``Client`` owns one gRPC channel. Channels are thread-safe and multiplex
all calls over one HTTP/2 connection, so share a client rather than opening
one per call.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

import grpc

from ._pb import event_stream_pb2 as es
from ._pb import event_stream_pb2_grpc as es_grpc
from ._pb import stream_admin_pb2 as sa
from ._pb import stream_admin_pb2_grpc as sa_grpc
from .backoff import Backoff
from .errors import translated
from .model import (
    ConsumerInfo,
    Entry,
    Event,
    GroupInfo,
    Heartbeat,
    PartitionInfo,
    PendingEntry,
    ReapResult,
    RemovedConsumer,
    StreamInfo,
    StreamSummary,
)
from .publisher import BatchSettings, Publisher
from .tail import Tail


def channel_options(max_reconnect_backoff_s: float = 5.0) -> list[tuple[str, int]]:
    """gRPC channel options suited to long-lived subscriptions.

    grpc's own reconnect backoff grows to 120 s by default; capping it keeps
    the channel's reconnect attempts in step with ``Consumer``'s backoff, so
    a restarted gateway is found within seconds. Keepalive pings detect a
    gateway that vanished without closing the connection, which a silent
    subscription would otherwise never notice.
    """
    return [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", int(max_reconnect_backoff_s * 1000)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]


class Client:
    """A connection to one gateway (``host:port``, plaintext).

    Unary calls time out after ``timeout`` seconds (None: never). Every
    method raises ``StreamgateError`` on failure.
    """

    def __init__(
        self,
        addr: str,
        *,
        timeout: Optional[float] = 30.0,
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        self._owns_channel = channel is None
        self.channel = channel or grpc.insecure_channel(addr, options=channel_options())
        self.events = es_grpc.EventStreamStub(self.channel)
        self.admin = sa_grpc.StreamAdminStub(self.channel)

    def close(self) -> None:
        """Closes the channel (if this client opened it), cancelling open calls."""
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- EventStream -------------------------------------------------------

    def produce(
        self,
        stream: str,
        type: str,
        fields: Optional[Mapping[str, str]] = None,
        *,
        binary_fields: Optional[Mapping[str, bytes]] = None,
        idempotency_key: str = "",
        key: str = "",
        max_len: Optional[int] = None,
        exact: bool = False,
    ) -> str:
        """Appends one event and returns its stream ID.

        With an ``idempotency_key``, a retry (after a timeout, say) writes
        nothing and returns the ID of the first call, as long as the key was
        produced to this stream within the gateway's ``--dedup-window-ms``.
        ``key`` is the event's partition key (see ``Event.key``).
        """
        event = Event(type, fields or {}, binary_fields or {}, idempotency_key, key)
        return self.produce_batch(stream, [event], max_len=max_len, exact=exact)[0]

    def produce_batch(
        self,
        stream: str,
        events: Iterable[Event],
        *,
        max_len: Optional[int] = None,
        exact: bool = False,
    ) -> list[str]:
        """Appends events in one round trip; returns their IDs in order.

        ``max_len`` caps the stream length (approximately unless ``exact``);
        None uses the gateway's ``--max-len``, 0 disables the cap.
        """
        request = es.ProduceRequest(
            stream=stream, events=[e.to_pb() for e in events], exact=exact
        )
        if max_len is not None:
            request.max_len = max_len
        with translated():
            return list(self.events.Produce(request, timeout=self.timeout).ids)

    def ack(self, stream: str, group: str, ids: Iterable[str]) -> int:
        """Acknowledges entries; returns how many were pending."""
        with translated():
            reply = self.events.Ack(
                es.AckRequest(stream=stream, group=group, ids=list(ids)), timeout=self.timeout
            )
        return int(reply.acked)

    def nack(
        self, stream: str, group: str, consumer: str, ids: Iterable[str], delay_ms: int = 0
    ) -> int:
        """Gives entries pending for ``consumer`` back without acknowledging
        them: after ``delay_ms`` (0: at once) the next reclaiming subscription
        of the group (see ``Consumer(reclaim=...)``) re-delivers them, whatever
        its ``min_idle_ms``. Returns how many were pending for ``consumer``
        (others are ignored)."""
        request = es.NackRequest(
            stream=stream, group=group, consumer=consumer, ids=list(ids), delay_ms=delay_ms
        )
        with translated():
            return int(self.events.Nack(request, timeout=self.timeout).scheduled)

    def extend(self, stream: str, group: str, consumer: str, ids: Iterable[str]) -> int:
        """Resets the idle time of entries pending for ``consumer`` without
        counting a delivery, so that long work is not reclaimed under a live
        worker. Returns how many were pending for ``consumer`` and extended."""
        request = es.ExtendRequest(stream=stream, group=group, consumer=consumer, ids=list(ids))
        with translated():
            return int(self.events.Extend(request, timeout=self.timeout).extended)

    def reap(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle_ms: int,
        *,
        page_count: int = 0,
        max_pages: int = 0,
        start_id: str = "",
    ) -> ReapResult:
        """Claims entries pending for at least ``min_idle_ms`` (typically of a
        crashed consumer) for ``consumer``. Each claimed entry carries its
        delivery count after the claim; acknowledge it once processed."""
        request = es.ReapRequest(
            stream=stream,
            group=group,
            consumer=consumer,
            min_idle_ms=min_idle_ms,
            page_count=page_count,
            max_pages=max_pages,
            start_id=start_id,
        )
        with translated():
            return ReapResult.from_pb(self.events.Reap(request, timeout=self.timeout))

    def replay(
        self,
        stream: str,
        start: str = "-",
        end: str = "+",
        *,
        limit: int = 0,
        reverse: bool = False,
        page_size: int = 0,
    ) -> Iterator[Entry]:
        """Yields history between ``start`` and ``end`` (inclusive IDs or
        millisecond timestamps), oldest first unless ``reverse``; ``limit``
        0 means all. No consumer group is involved. Stopping the iteration
        early cancels the call."""
        request = es.ReplayRequest(
            stream=stream, start=start, end=end, limit=limit, reverse=reverse, page_size=page_size
        )
        call = self.events.Replay(request)
        try:
            with translated():
                for page in call:
                    for entry in page.entries:
                        yield Entry.from_pb(entry)
        finally:
            call.cancel()

    def trim(
        self,
        stream: str,
        *,
        max_len: Optional[int] = None,
        min_id: Optional[str] = None,
        exact: bool = False,
        limit: int = 0,
        acked_by_all_groups: bool = False,
    ) -> int:
        """Removes old entries, keeping the newest ``max_len`` or those with
        IDs from ``min_id`` on (give exactly one). Approximate (cheap, whole
        macro nodes only) unless ``exact``. Returns how many were removed.

        With ``acked_by_all_groups`` only entries that every consumer group
        has delivered and acknowledged are removed, so retention never
        destroys unprocessed work; ``max_len=0`` then removes everything that
        is safe to remove."""
        if (max_len is None) == (min_id is None):
            raise ValueError("give exactly one of max_len and min_id")
        request = es.TrimRequest(
            stream=stream, exact=exact, limit=limit, acked_by_all_groups=acked_by_all_groups
        )
        if max_len is not None:
            request.max_len = max_len
        else:
            request.min_id = min_id or ""
        with translated():
            return int(self.events.Trim(request, timeout=self.timeout).trimmed)

    def tail(
        self,
        stream: str,
        start_id: str = "$",
        *,
        batch_size: int = 0,
        heartbeat_ms: Optional[int] = None,
        on_heartbeat: Optional[Callable[[Heartbeat], None]] = None,
    ) -> Tail:
        """Follows ``stream`` live, outside any group: iterate the returned
        ``Tail`` for entries appended after ``start_id`` (``$``: from now on,
        ``0``: the whole stream first, or an ID). Returns once the gateway has
        set the read up. ``heartbeat_ms`` (None: the gateway's default, 0:
        never) is how long the gateway waits before a keep-alive; heartbeats
        are consumed silently (see ``Tail.last_heartbeat``, ``on_heartbeat``).
        Close the tail (or use it as a context manager) when done."""
        request = es.TailRequest(stream=stream, start_id=start_id, batch_size=batch_size)
        if heartbeat_ms is not None:
            request.heartbeat_ms = heartbeat_ms
        return Tail(self.events, request, on_heartbeat)

    # -- StreamAdmin -------------------------------------------------------

    def create_stream(self, stream: str, partitions: int = 0) -> bool:
        """Creates a stream: partitioned with ``partitions`` >= 2 (entry IDs
        are then ``<partition>/<ms>-<seq>`` and an event's ``key`` picks its
        partition), plain with 0 or 1. Returns False if it existed with this
        count; another count is FAILED_PRECONDITION (it cannot change)."""
        request = sa.CreateStreamRequest(stream=stream, partitions=partitions)
        with translated():
            return bool(self.admin.CreateStream(request, timeout=self.timeout).created)

    def list_partitions(self, stream: str, group: str = "") -> list[PartitionInfo]:
        """The stream's partitions in order (a plain stream lists as one,
        partition 0); with ``group``, each one's ordered owner, pending
        count and lag in that group."""
        with translated():
            reply = self.admin.ListPartitions(
                sa.ListPartitionsRequest(stream=stream, group=group), timeout=self.timeout
            )
        return [PartitionInfo.from_pb(p) for p in reply.partitions]

    def create_group(
        self, stream: str, group: str, start_id: str = "$", *, mkstream: bool = True
    ) -> bool:
        """Creates a consumer group starting after ``start_id`` (``$``: only
        new entries, ``0``: the whole stream). Returns False if it existed."""
        request = sa.CreateGroupRequest(
            stream=stream, group=group, start_id=start_id, mkstream=mkstream
        )
        with translated():
            return bool(self.admin.CreateGroup(request, timeout=self.timeout).created)

    def delete_group(self, stream: str, group: str) -> bool:
        """Deletes a group and its pending entries list. False if it did not exist."""
        with translated():
            reply = self.admin.DeleteGroup(
                sa.DeleteGroupRequest(stream=stream, group=group), timeout=self.timeout
            )
        return bool(reply.deleted)

    def set_group_cursor(self, stream: str, group: str, id: str) -> None:
        """Moves the group's last-delivered ID (re-process or skip entries)."""
        with translated():
            self.admin.SetGroupCursor(
                sa.SetGroupCursorRequest(stream=stream, group=group, id=id), timeout=self.timeout
            )

    def describe_stream(self, stream: str) -> StreamInfo:
        """Length, ID bounds and group count. NOT_FOUND if the stream does not exist."""
        with translated():
            reply = self.admin.DescribeStream(
                sa.DescribeStreamRequest(stream=stream), timeout=self.timeout
            )
        return StreamInfo.from_pb(reply)

    def list_streams(self, *, page_limit: int = 0) -> list[StreamSummary]:
        """Every stream under the gateway's key prefix that this caller may
        inspect (``admin``), unsorted; follows ListStreams' pages
        (``page_limit`` streams per call, 0 = the gateway's default)."""
        streams: list[StreamSummary] = []
        cursor = ""
        while True:
            with translated():
                reply = self.admin.ListStreams(
                    sa.ListStreamsRequest(cursor=cursor, limit=page_limit), timeout=self.timeout
                )
            streams.extend(StreamSummary.from_pb(s) for s in reply.streams)
            if not reply.next_cursor:
                return streams
            cursor = reply.next_cursor

    def list_groups(self, stream: str) -> list[GroupInfo]:
        """The stream's consumer groups with pending counts and lag."""
        with translated():
            reply = self.admin.ListGroups(sa.ListGroupsRequest(stream=stream), timeout=self.timeout)
        return [GroupInfo.from_pb(g) for g in reply.groups]

    def list_consumers(self, stream: str, group: str) -> list[ConsumerInfo]:
        """The group's consumers with pending counts and idle times."""
        with translated():
            reply = self.admin.ListConsumers(
                sa.ListConsumersRequest(stream=stream, group=group), timeout=self.timeout
            )
        return [ConsumerInfo.from_pb(c) for c in reply.consumers]

    def list_pending(
        self,
        stream: str,
        group: str,
        *,
        consumer: Optional[str] = None,
        min_idle_ms: int = 0,
        start: str = "-",
        end: str = "+",
        count: int = 0,
    ) -> list[PendingEntry]:
        """The group's unacknowledged entries (optionally one consumer's, or
        only those idle for ``min_idle_ms``), at most ``count`` (0 = 100)."""
        request = sa.ListPendingRequest(
            stream=stream, group=group, min_idle_ms=min_idle_ms, start=start, end=end, count=count
        )
        if consumer is not None:
            request.consumer = consumer
        with translated():
            reply = self.admin.ListPending(request, timeout=self.timeout)
        return [PendingEntry.from_pb(p) for p in reply.entries]

    def remove_consumer(
        self, stream: str, group: str, consumer: str, handover_to: str = ""
    ) -> RemovedConsumer:
        """Removes a consumer, first handing its pending entries to
        ``handover_to``. Without ``handover_to``, a consumer with pending
        entries is refused (FAILED_PRECONDITION) rather than losing them."""
        request = sa.RemoveConsumerRequest(
            stream=stream, group=group, consumer=consumer, handover_to=handover_to
        )
        with translated():
            reply = self.admin.RemoveConsumer(request, timeout=self.timeout)
        return RemovedConsumer(removed=reply.removed, handed_over=reply.handed_over)


class Producer:
    """Appends events to streams.

    ``publish(stream, type, fields)`` is the fast path: it returns a
    ``Future`` of the event's ID at once and batches events over one
    long-lived ProduceStream (see ``BatchSettings``: by default a request
    per 100 events, 1 MiB or 10 ms, whichever comes first). ``flush()`` sends
    what is buffered and waits for the answers; ``close()`` flushes too.
    ``produce`` and ``produce_batch`` are plain unary calls.

    A publish fails (its future raises ``StreamgateError``) with the
    gateway's code and message when the request it was batched into is
    refused: one bad event fails the events batched with it, not the others.
    A broken stream (gateway restart) is reopened with ``backoff`` and the
    unanswered requests are sent again; events without an
    ``idempotency_key`` may then be appended twice (at-least-once).

    Takes an address or a shared ``Client``; everything else a producer may
    need (``trim``, ``describe_stream``) is on ``producer.client``.
    """

    def __init__(
        self,
        addr: str | Client,
        *,
        timeout: Optional[float] = 30.0,
        batch_settings: BatchSettings = BatchSettings(),
        backoff: Backoff = Backoff(),
    ) -> None:
        self._owns_client = not isinstance(addr, Client)
        self.client = addr if isinstance(addr, Client) else Client(addr, timeout=timeout)
        self.timeout = timeout
        #: The batching ProduceStream behind ``publish`` (``requests_sent``,
        #: ``streams_opened`` count what it did).
        self.publisher = Publisher(self.client.events, batch_settings, backoff)

    def publish(
        self,
        stream: str,
        event: Event | str,
        fields: Optional[Mapping[str, str]] = None,
        *,
        binary_fields: Optional[Mapping[str, bytes]] = None,
        idempotency_key: str = "",
        key: str = "",
    ) -> Future[str]:
        """Queues one event (an ``Event``, or its type with ``fields``) for
        ``stream``; the future resolves to its ID once the batch it joined
        is appended. IDs of one stream come in publish order. ``key`` is the
        event's partition key (see ``Event.key``)."""
        if isinstance(event, str):
            event = Event(event, fields or {}, binary_fields or {}, idempotency_key, key)
        return self.publisher.publish(stream, event.to_pb())

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends every buffered event now and waits until all publishes so
        far are answered; False if ``timeout`` seconds passed first. Failed
        publishes are reported by their futures, not here."""
        return self.publisher.flush(timeout)

    def produce(
        self,
        stream: str,
        type: str,
        fields: Optional[Mapping[str, str]] = None,
        *,
        binary_fields: Optional[Mapping[str, bytes]] = None,
        idempotency_key: str = "",
        key: str = "",
        max_len: Optional[int] = None,
    ) -> str:
        """Appends one event; returns its stream ID. A retry with the same
        ``idempotency_key`` returns the first ID and writes nothing. ``key``
        is the event's partition key (see ``Event.key``)."""
        return self.client.produce(
            stream,
            type,
            fields,
            binary_fields=binary_fields,
            idempotency_key=idempotency_key,
            key=key,
            max_len=max_len,
        )

    def produce_batch(
        self,
        stream: str,
        events: Iterable[Event | tuple[str, Mapping[str, str]]],
        *,
        max_len: Optional[int] = None,
    ) -> list[str]:
        """Appends events (``Event`` or ``(type, fields)`` pairs) in one round
        trip; returns their IDs in order."""
        batch: Sequence[Event] = [e if isinstance(e, Event) else Event(*e) for e in events]
        return self.client.produce_batch(stream, batch, max_len=max_len)

    def close(self) -> None:
        """Flushes (waiting up to ``timeout`` for the answers; what is still
        unanswered then fails with UNAVAILABLE), ends the stream and closes
        the connection unless the client was shared."""
        self.publisher.close(self.timeout)
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
