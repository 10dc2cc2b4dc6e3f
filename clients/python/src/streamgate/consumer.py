"""``Consumer``: a consumer-group member that survives gateway restarts.

Delivery is at-least-once. The gateway never acknowledges on the consumer's
behalf, so an entry is pending until ``ack``. When a gateway shuts down it
ends every subscription with UNAVAILABLE; the consumer then reconnects with
capped exponential backoff and ``pending_first=True``, so the entries it had
received (or the gateway had read for it) but not acknowledged come first,
followed by new ones. Such an entry may therefore be seen twice: make
processing idempotent, and check ``delivery_count`` if that matters.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Generator, Iterable, Iterator, Optional, Union

import grpc

from ._pb import event_stream_pb2 as es
from .client import Client
from .errors import StreamgateError
from .model import Entry, ReapResult

log = logging.getLogger("streamgate")

#: Codes that end a subscription for a reason that a retry can fix: the
#: gateway shut down or is unreachable (UNAVAILABLE), or its Redis timed out
#: (DEADLINE_EXCEEDED: Subscribe itself never carries a client deadline).
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter, in seconds.

    Jitter spreads the reconnects of many consumers after a gateway restart
    so that they do not all arrive in the same instant.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delays(self) -> Iterator[float]:
        """The successive waits: initial, initial*multiplier, ... up to maximum."""
        delay = self.initial
        while True:
            yield delay * (1 - self.jitter * random.random())
            delay = min(delay * self.multiplier, self.maximum)


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
        self.backoff = backoff
        #: How many times the subscription was re-established.
        self.reconnects = 0
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
        """One Subscribe call; yields its batches, skipping heartbeats."""
        request = es.SubscribeRequest(
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            batch_size=self.batch_size,
            create_group=self.create_group,
            group_start_id=self.group_start_id,
            pending_first=pending_first,
        )
        call = self.client.events.Subscribe(request)
        with self._lock:
            self._call = call
        if self._closed.is_set():  # close() ran before the call was visible
            call.cancel()
        try:
            for response in call:
                if response.WhichOneof("kind") == "batch":
                    yield [Entry.from_pb(e) for e in response.batch.entries]
        except grpc.RpcError as err:
            raise StreamgateError.from_rpc(err) from err
        finally:
            with self._lock:
                self._call = None
            call.cancel()

    def ack(self, entries: EntryOrId | Iterable[EntryOrId]) -> int:
        """Acknowledges one entry or many (entries or IDs); returns how many
        were pending. Acknowledge only after processing: an entry that is
        never acknowledged is re-delivered (pending_first) or reaped."""
        if isinstance(entries, (Entry, str)):
            entries = [entries]
        ids = [e.id if isinstance(e, Entry) else e for e in entries]
        if not ids:
            return 0
        return self.client.ack(self.stream, self.group, ids)

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
