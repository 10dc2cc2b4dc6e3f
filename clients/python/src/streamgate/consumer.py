"""``Consumer``: a consumer-group member that survives gateway restarts.

Delivery is at-least-once. The gateway never acknowledges on the consumer's
behalf, so an entry is pending until ``ack``. When a gateway shuts down it
ends every subscription with UNAVAILABLE; the consumer then reconnects with
capped exponential backoff and ``pending_first=True``, so the entries it had
received (or the gateway had read for it) but not acknowledged come first,
followed by new ones. Such an entry may therefore be seen twice: make
processing idempotent, and check ``redelivered`` / ``delivery_count`` if
that matters.

With ``reclaim`` the subscription also recovers the work of crashed peers
(entries of the group idle for ``min_idle_ms``) and entries given back with
``nack``; ``max_deliveries`` moves an entry that keeps failing to a
dead-letter stream instead of delivering it forever; ``max_in_flight``
bounds how many unacknowledged entries this consumer holds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Generator, Iterable, Iterator, Optional, Union

import grpc

from ._pb import event_stream_pb2 as es
from .backoff import RECONNECT_CODES, Backoff
from .client import Client
from .errors import StreamgateError
from .model import Entry, Heartbeat, ReapResult, Reclaim

log = logging.getLogger("streamgate")

EntryOrId = Union[Entry, str]


class Consumer:
    """Reads a stream as ``consumer`` of ``group``: ``for entry in consumer:``.

    ``create_group`` creates the group (and stream) if missing, starting at
    ``group_start_id`` (``$``: new entries only, ``0``: the whole stream).
    ``batch_size`` is the most entries per read (0: the gateway's default).
    ``pending_first`` (default True) first re-delivers this consumer's
    unacknowledged entries, e.g. those of a previous run under the same name
    (reconnects always do). That includes entries the gateway read for a
    closed subscription but could not deliver: it may go on reading for up to
    its ``--block-ms`` after a client goes away, and such entries stay pending
    for this consumer name.

    Delivery options (see the gateway's README, "Subscribe options"):

    - ``reclaim=Reclaim(min_idle_ms, interval_ms=0)``: every ``interval_ms``
      (0: ``min_idle_ms / 2``) claim the group's entries idle for at least
      ``min_idle_ms`` (a crashed peer's work) and entries whose ``nack``
      delay has passed, and deliver them with ``redelivered`` set.
    - ``max_deliveries`` (0: no limit): when a reclaim would deliver an entry
      once more than this, move it to ``dead_letter_stream`` (default
      ``<stream>:dlq``) and acknowledge it instead, atomically.
    - ``max_in_flight`` (0: no limit): never hold more unacknowledged
      entries than this; reads pause until ``ack`` makes room.
    - ``heartbeat_ms`` (None: the gateway's ``--heartbeat-ms``, 0: never):
      the gateway sends a heartbeat after this long without entries. The
      iteration consumes heartbeats silently; ``last_heartbeat`` holds the
      latest and ``on_heartbeat`` is called with each (in the iterating
      thread).

    A gateway that cannot be reached at all is retried the same way, forever:
    a consumer outlives gateway restarts and deploys. Iterate in one thread;
    ``close()`` may be called from any thread and ends the iteration. Errors other than the reconnectable ones raise
    ``StreamgateError`` from the iteration (e.g. NOT_FOUND for a missing group
    without ``create_group``).
    """

    def __init__(
        self,
        addr: str | Client,
        stream: str,
        group: str,
        consumer: str,
        *,
        create_group: bool = False,
        group_start_id: str = "$",
        batch_size: int = 0,
        pending_first: bool = True,
        reclaim: Optional[Reclaim] = None,
        max_deliveries: int = 0,
        dead_letter_stream: str = "",
        max_in_flight: int = 0,
        heartbeat_ms: Optional[int] = None,
        on_heartbeat: Optional[Callable[[Heartbeat], None]] = None,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._owns_client = not isinstance(addr, Client)
        self.client = addr if isinstance(addr, Client) else Client(addr)
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.create_group = create_group
        self.group_start_id = group_start_id
        self.batch_size = batch_size
        self.pending_first = pending_first
        self.reclaim = reclaim
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream
        self.max_in_flight = max_in_flight
        self.heartbeat_ms = heartbeat_ms
        self.on_heartbeat = on_heartbeat
        self.backoff = backoff
        #: How many times the subscription was re-established.
        self.reconnects = 0
        #: The most recent heartbeat, or None before the first one.
        self.last_heartbeat: Optional[Heartbeat] = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call: Optional[grpc.RpcContext] = None

    def __iter__(self) -> Iterator[Entry]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Entry]]:
        """Yields entries one gateway batch (one Redis read) at a time, which
        suits processing and acknowledging in bulk."""
        pending_first = self.pending_first
        delays = self.backoff.delays()
        while not self._closed.is_set():
            started = time.monotonic()
            try:
                # closing(): leaving the loop early cancels the call at once.
                with closing(self._subscribe(pending_first)) as subscription:
                    for batch in subscription:
                        delays = self.backoff.delays()  # the connection works again
                        yield batch
                if self._closed.is_set():
                    return
                # An end without error is unexpected (the gateway ends every
                # subscription with a status): reconnect like after UNAVAILABLE.
                log.warning("subscription to %s/%s ended without status; reconnecting",
                            self.stream, self.group)
            except StreamgateError as err:
                if self._closed.is_set():
                    return
                if err.code not in RECONNECT_CODES:
                    raise
                log.info("subscription to %s/%s lost (%s); reconnecting",
                         self.stream, self.group, err)
            # Our own unacknowledged entries first: they were delivered (or
            # read for us) on the lost subscription and are still ours.
            pending_first = True
            if time.monotonic() - started > self.backoff.maximum:
                delays = self.backoff.delays()  # it was up for a while: start over
            if self._closed.wait(next(delays)):
                return
            self.reconnects += 1

    def _subscribe(self, pending_first: bool) -> Generator[list[Entry], None, None]:
        """One Subscribe call; yields its batches and records heartbeats."""
        request = es.SubscribeRequest(
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            batch_size=self.batch_size,
            create_group=self.create_group,
            group_start_id=self.group_start_id,
            pending_first=pending_first,
            max_deliveries=self.max_deliveries,
            dead_letter_stream=self.dead_letter_stream,
            max_in_flight=self.max_in_flight,
        )
        if self.reclaim is not None:
            request.reclaim.CopyFrom(self.reclaim.to_pb())
        if self.heartbeat_ms is not None:
            request.heartbeat_ms = self.heartbeat_ms
        call = self.client.events.Subscribe(request)
        with self._lock:
            self._call = call
        if self._closed.is_set():  # close() ran before the call was visible
            call.cancel()
        try:
            for response in call:
                kind = response.WhichOneof("kind")
                if kind == "batch":
                    yield [Entry.from_pb(e) for e in response.batch.entries]
                elif kind == "heartbeat":
                    self.last_heartbeat = Heartbeat.from_pb(response.heartbeat)
                    if self.on_heartbeat is not None:
                        self.on_heartbeat(self.last_heartbeat)
        except grpc.RpcError as err:
            raise StreamgateError.from_rpc(err) from err
        finally:
            with self._lock:
                self._call = None
            call.cancel()

    def ack(self, entries: EntryOrId | Iterable[EntryOrId]) -> int:
        """Acknowledges one entry or many (entries or IDs); returns how many
        were pending. Acknowledge only after processing: an entry that is
        never acknowledged is re-delivered (pending_first), reclaimed or
        reaped."""
        ids = _ids(entries)
        return self.client.ack(self.stream, self.group, ids) if ids else 0

    def nack(self, entries: EntryOrId | Iterable[EntryOrId], delay_ms: int = 0) -> int:
        """Gives one entry or many back for re-delivery after ``delay_ms``
        (0: at the next reclaim round), without acknowledging them. A
        reclaiming subscription of the group (``reclaim=...``, possibly this
        one) takes them whatever its ``min_idle_ms``; each re-delivery counts
        towards ``max_deliveries``. Returns how many were pending for this
        consumer."""
        ids = _ids(entries)
        if not ids:
            return 0
        return self.client.nack(self.stream, self.group, self.consumer, ids, delay_ms)

    def extend(self, entries: EntryOrId | Iterable[EntryOrId]) -> int:
        """Resets the idle time of one entry or many pending for this
        consumer, without counting a delivery: call it during long work so a
        reclaiming peer does not take the entry over. Returns how many were
        extended."""
        ids = _ids(entries)
        return self.client.extend(self.stream, self.group, self.consumer, ids) if ids else 0

    def reap(
        self, min_idle_ms: int, *, page_count: int = 0, max_pages: int = 0, start_id: str = ""
    ) -> ReapResult:
        """Claims for this consumer the group's entries that have been pending
        for at least ``min_idle_ms`` (e.g. of a crashed peer); process and
        ``ack`` them like delivered entries. Paging as in ``Client.reap``."""
        return self.client.reap(
            self.stream, self.group, self.consumer, min_idle_ms,
            page_count=page_count, max_pages=max_pages, start_id=start_id,
        )

    def close(self) -> None:
        """Stops the subscription (thread-safe) and closes the connection
        unless the client was shared. Unacknowledged entries stay pending."""
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ids(entries: EntryOrId | Iterable[EntryOrId]) -> list[str]:
    """The IDs of one entry or ID, or of many."""
    if isinstance(entries, (Entry, str)):
        entries = [entries]
    return [e.id if isinstance(e, Entry) else e for e in entries]
