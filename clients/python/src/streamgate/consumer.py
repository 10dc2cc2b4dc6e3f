"""``Consumer``: a consumer-group member over one Consume stream that
survives gateway restarts.

Delivery is at-least-once. The gateway never acknowledges on the consumer's
behalf, so an entry is pending until ``ack``. Acks, nacks and extensions go
in band on the same Consume stream that delivers the entries: acks are
batched (one message per ``ack_batch_size`` IDs or ``ack_delay_ms``,
whichever comes first) and every message is answered by a Confirm that
resolves the futures ``ack``/``nack``/``extend`` returned.

While entries are held (delivered and neither acked nor nacked: being
handled, or waiting to be), the consumer extends their lease every
``lease_ms / 2``, so a reclaiming peer whose ``min_idle_ms`` is at least
``lease_ms`` does not take slow-but-alive work over.

When a gateway shuts down it ends every stream with UNAVAILABLE; the
consumer then reconnects with capped exponential backoff and
``pending_first=True``, so the entries it had received (or the gateway had
read for it) but not acknowledged come first, followed by new ones. Acks
not yet confirmed are sent again on the new stream. Such an entry may
therefore be seen twice: make processing idempotent, and check
``redelivered`` / ``delivery_count`` if that matters.

With ``reclaim`` the subscription also recovers the work of crashed peers
(entries of the group idle for ``min_idle_ms``) and entries given back with
``nack``; ``max_deliveries`` moves an entry that keeps failing to a
dead-letter stream instead of delivering it forever; ``max_in_flight``
bounds how many unacknowledged entries this consumer holds.

With ``ordered=True`` (a partitioned stream) each partition is owned by one
consumer of the group at a time, and the consumer keeps its acks in the
order it received each partition's entries (``_Lines``), which is what the
gateway's ordering guarantee asks of it. ``process(handler, concurrency=N)``
runs a handler on N threads, one partition's entries one after the other
(``_Lanes``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from contextlib import closing
from typing import Callable, Generator, Iterable, Iterator, Optional, Union

import grpc

from ._pb import event_stream_pb2 as es
from .backoff import RECONNECT_CODES, Backoff
from .client import Client
from .errors import StreamgateError
from .model import Entry, Heartbeat, ReapResult, Reclaim

__all__ = ["Backoff", "Consumer", "RECONNECT_CODES"]

log = logging.getLogger("streamgate")

EntryOrId = Union[Entry, str]

_ACK, _NACK, _EXTEND = es.CONFIRM_OP_ACK, es.CONFIRM_OP_NACK, es.CONFIRM_OP_EXTEND


class _Op:
    """One ack, nack or extend message, with the callers' futures: each
    resolves to how many of its own IDs the Confirm lists as done."""

    __slots__ = ("op", "ids", "delay_ms", "parts")

    def __init__(self, op: int, delay_ms: int = 0) -> None:
        self.op = op
        self.ids: list[str] = []
        self.delay_ms = delay_ms
        self.parts: list[tuple[list[str], Future[int]]] = []

    def add(self, ids: list[str], future: Optional[Future[int]]) -> None:
        self.ids.extend(ids)
        if future is not None:
            self.parts.append((ids, future))

    def to_pb(self) -> es.ConsumeRequest:
        if self.op == _ACK:
            return es.ConsumeRequest(ack=es.AckIds(ids=self.ids))
        if self.op == _NACK:
            return es.ConsumeRequest(nack=es.NackIds(ids=self.ids, delay_ms=self.delay_ms))
        return es.ConsumeRequest(extend=es.ExtendIds(ids=self.ids))

    def confirm(self, confirm: es.Confirm) -> None:
        done = set(confirm.done)
        for ids, future in self.parts:
            if not future.done():  # a caller may have cancelled it
                future.set_result(sum(1 for id in ids if id in done))

    def fail(self, error: BaseException) -> None:
        for _, future in self.parts:
            if not future.done():
                future.set_exception(error)


class _Tally:
    """The future of one ``ack`` in ordered mode. Its IDs may go out in
    several messages (each when its line lets it) or not at all (dropped
    after a nack: they come again), so each ID is settled on its own; the
    future resolves to how many the gateway acknowledged once all are, or
    fails with the first failure."""

    def __init__(self, future: Future[int], ids: int) -> None:
        self.future = future
        self._lock = threading.Lock()
        self._left = ids
        self._acked = 0

    def part(self) -> Future[int]:
        """A future for one of the IDs, resolved by the Confirm of the
        message that carries it."""
        part: Future[int] = Future()
        part.add_done_callback(self._confirmed)
        return part

    def _confirmed(self, part: Future[int]) -> None:
        error = part.exception()
        if error is not None:
            self.settle(0, error)
        else:
            self.settle(part.result())

    def settle(self, acked: int, error: Optional[BaseException] = None) -> None:
        """One ID is settled: ``acked`` (0 or 1), or failed."""
        with self._lock:
            self._left -= 1
            self._acked += acked
            if self.future.done():  # failed before, or cancelled by the caller
                return
            if error is not None:
                self.future.set_exception(error)
            elif self._left == 0:
                self.future.set_result(self._acked)


class _Slot:
    """One delivery of an entry in ordered mode. ``acked`` is the ack's
    tally once the application acked it; ``dropped`` is set when a nack of
    an earlier entry of its partition gave it back."""

    __slots__ = ("entry", "acked", "dropped")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.acked: Optional[_Tally] = None
        self.dropped = False


class _Lines:
    """Ordered mode's bookkeeping: per partition, the *line* of entries this
    consumer received and still holds, in the order received.

    The gateway guarantees that the group's first acks of one key's entries
    happen in production order, provided every consumer acks each
    partition's entries in the order it received them. Applications finish
    entries out of order (handlers of different partitions run in parallel,
    a batch may be acked backwards), so the consumer restores that order
    itself, with two rules:

    1. **Acks wait for the line.** An ack is held back until every entry
       received before it in its partition's line is acked too; then the
       acked front of the line goes out, in line order.
    2. **A nack cuts the line.** A nack of X makes the gateway re-deliver X
       and every later entry of its partition it delivered, in order, after
       X. So the entries received after X in its line are dropped: those
       not yet handed to the application never are, and their acks (given
       before the nack or after it) are not sent. They come again, after X.

    3. **A nack holds its partition until its Confirm.** Entries of the
       partition the gateway read before the nack took effect may still
       arrive after it was sent, as first deliveries. The gateway's
       contract (docs/ordered.md, "The guarantee", item 3) is that they
       all arrive before the nack's Confirm, and that what it reads after
       the nack follows the Confirm. So the entries of the partition that
       arrive while a nack of it is unconfirmed wait, outside the line;
       when the Confirm lists the nacked X as done, those from X on are
       dropped (the partition starts again at X: they come again, after
       it), and once no nack of the partition is unconfirmed the others
       join the line and are handed out. If X is not done (not pending
       any more, or the partition moved to another consumer), nothing
       comes again, so none is dropped.

    An entry that is in no line (never received, or its ack already went
    out) is acked at once. The consumer's lock guards all of it.
    """

    def __init__(self) -> None:
        self._lines: dict[int, deque[_Slot]] = {}
        # Every slot in a line, and dropped slots the application may still
        # ack, nack or be handed; a few per ID at most (re-deliveries).
        self._by_id: dict[str, list[_Slot]] = {}
        # Rule 3: per partition, the nacks sent (or queued) and not yet
        # confirmed, and the entries received meanwhile.
        self._nacks: dict[int, int] = {}
        self._waiting: dict[int, list[Entry]] = {}

    def receive(self, entry: Entry) -> bool:
        """Takes a received entry into its line; False if it waits for the
        Confirm of a nack of its partition instead (rule 3)."""
        if entry.partition in self._nacks:
            self._waiting.setdefault(entry.partition, []).append(entry)
            return False
        slot = _Slot(entry)
        self._lines.setdefault(entry.partition, deque()).append(slot)
        self._by_id.setdefault(entry.id, []).append(slot)
        return True

    def nacking(self, ids: list[str]) -> None:
        """Rule 3: a nack of ``ids`` is queued; their partitions wait for its
        Confirm."""
        for partition in {p for p, _ in filter(None, map(_position, ids))}:
            self._nacks[partition] = self._nacks.get(partition, 0) + 1

    def confirmed(self, ids: list[str], done: set[str]) -> list[Entry]:
        """Rule 3: the Confirm of the nack of ``ids`` arrived. Drops the
        waiting entries it gives back; returns those it releases, now in
        their lines, in the order received."""
        done_in: dict[int, list[tuple[int, int]]] = {}  # partition -> done IDs' places
        for id, position in zip(ids, map(_position, ids)):
            if position is not None:
                places = done_in.setdefault(position[0], [])
                if id in done:
                    places.append(position[1])
        released: list[Entry] = []
        for partition, places in done_in.items():
            waiting = self._waiting.get(partition, [])
            if places:  # the partition starts again at the earliest one done
                start = min(places)
                waiting[:] = [e for e in waiting if _place(e.id) < start]
            left = self._nacks.get(partition, 1) - 1
            if left > 0:
                self._nacks[partition] = left
                continue
            self._nacks.pop(partition, None)
            for entry in self._waiting.pop(partition, []):
                self.receive(entry)
                released.append(entry)
        return released

    def call_ended(self) -> None:
        """The Consume call ended: the entries waiting for a Confirm are
        dropped (pending for this consumer, the next call delivers them
        again first). The unconfirmed nacks are sent again on it, and
        their partitions keep waiting for them."""
        self._waiting.clear()

    def find(self, item: EntryOrId) -> Optional[_Slot]:
        """The delivery an ack or nack of ``item`` is about: that very one
        for an ``Entry``, the oldest not acked yet for an ID."""
        if isinstance(item, Entry):
            return next((s for s in self._by_id.get(item.id, ()) if s.entry is item), None)
        slots = self._by_id.get(item, [])
        return next((s for s in slots if s.acked is None), slots[0] if slots else None)

    def hand_out(self, entry: Entry) -> bool:
        """Whether ``entry`` may be handed to the application: not when a
        nack dropped it (rule 2)."""
        slot = self.find(entry)
        if slot is None or not slot.dropped:
            return True
        self._forget(slot)
        return False

    def ack(self, slot: _Slot, tally: _Tally) -> list[_Slot]:
        """Rule 1: marks ``slot`` acked and returns the slots whose acks are
        due now, in line order (none while an earlier entry is not acked)."""
        if slot.dropped:  # not acked: it comes again
            self._forget(slot)
            tally.settle(0)
            return []
        if slot.acked is not None:  # acked already: that ack goes out
            tally.settle(0)
            return []
        slot.acked = tally
        line = self._lines[slot.entry.partition]
        due: list[_Slot] = []
        while line and line[0].acked is not None:
            due.append(line.popleft())
            self._forget(due[-1])
        return due

    def nack(self, slot: _Slot) -> list[_Slot]:
        """Rule 2: cuts the line at ``slot``; returns the cut slots, the
        nacked one first (none if it was dropped already: it comes again
        anyway, so its nack is not sent)."""
        self._forget(slot)
        if slot.dropped:
            return []
        line = self._lines[slot.entry.partition]
        cut = list(itertools.islice(line, line.index(slot), None))
        for later in cut:
            line.pop()
            if later.acked is not None:  # its ack is not sent: it comes again
                later.acked.settle(0)
                self._forget(later)
            elif later is not slot:
                later.dropped = True  # forgotten once handed out or settled
        return cut

    def clear(self) -> list[_Slot]:
        """Forgets everything; returns the slots whose acks were held back."""
        held = [s for line in self._lines.values() for s in line if s.acked is not None]
        self._lines.clear()
        self._by_id.clear()
        self._nacks.clear()
        self._waiting.clear()
        return held

    def _forget(self, slot: _Slot) -> None:
        slots = self._by_id.get(slot.entry.id, [])
        if slot in slots:
            slots.remove(slot)
            if not slots:
                del self._by_id[slot.entry.id]


class _Lanes:
    """The entries waiting for ``process``'s handler threads, in lanes: one
    handler at a time takes a lane's entries, one after the other, in
    order; different lanes are handled in parallel. Ordered, a lane is a
    partition; unordered, every entry is a lane of its own, handled as soon
    as a thread is free."""

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._cond = threading.Condition()
        self._queues: dict[object, deque[Entry]] = {}  # lane -> waiting entries
        self._ready: deque[object] = deque()  # lanes with entries and no handler
        self._busy: set[object] = set()  # lanes a handler holds
        self._running: set[threading.Thread] = set()  # threads in a handler
        self._stopped = False
        self._unique = itertools.count()

    def put(self, entries: list[Entry]) -> None:
        with self._cond:
            if self._stopped:
                return  # not handed out: stays pending, comes again
            for entry in entries:
                lane = entry.partition if self._ordered else next(self._unique)
                waiting = self._queues.setdefault(lane, deque())
                if not waiting and lane not in self._busy:
                    self._ready.append(lane)
                waiting.append(entry)
            self._cond.notify_all()

    def take(self) -> Optional[tuple[object, Entry]]:
        """The next entry of a lane no handler holds (waits for one), now
        held by the calling thread; None once stopped."""
        with self._cond:
            while not self._ready and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            lane = self._ready.popleft()
            self._busy.add(lane)
            self._running.add(threading.current_thread())
            return lane, self._queues[lane].popleft()

    def done(self, lane: object) -> None:
        """The calling thread is done with its entry of ``lane``."""
        with self._cond:
            self._busy.discard(lane)
            self._running.discard(threading.current_thread())
            if self._queues[lane]:
                self._ready.append(lane)  # at the back: lanes take turns
            else:
                del self._queues[lane]
            self._cond.notify_all()

    def stop(self, timeout: float = 0.0) -> None:
        """Hands nothing out any more, then waits up to ``timeout`` for the
        handlers still running (but the calling one) to return."""
        me = {threading.current_thread()}
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._running - me, timeout)


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

    Delivery options (gateway docs/delivery.md, "Subscribe options"):

    - ``reclaim=Reclaim(min_idle_ms, interval_ms=0)``: every ``interval_ms``
      (0: ``min_idle_ms / 2``) claim the group's entries idle for at least
      ``min_idle_ms`` (a crashed peer's work) and entries whose ``nack``
      delay has passed, and deliver them with ``redelivered`` set.
    - ``max_deliveries`` (0: no limit): when a reclaim would deliver an entry
      once more than this, move it to ``dead_letter_stream`` (default
      ``<stream>:dlq``) and acknowledge it instead, atomically.
    - ``max_in_flight`` (0: no limit): never hold more unacknowledged
      entries than this; reads pause until an ack makes room. Batches are
      read off the stream as they come (confirms travel on it too), so this
      is also what bounds the entries buffered in the client.
    - ``heartbeat_ms`` (None: the gateway's ``--heartbeat-ms``, 0: never):
      the gateway sends a heartbeat after this long without entries. The
      iteration consumes heartbeats silently; ``last_heartbeat`` holds the
      latest and ``on_heartbeat`` is called with each (in the iterating
      thread).

    In-band acknowledgement and leases:

    - ``ack_batch_size`` (default 100) and ``ack_delay_ms`` (default 10):
      acks are sent as one message once that many IDs are queued or the
      oldest has waited that long (and on ``close``).
    - ``lease_ms`` (default 30000; 0: never extend): every ``lease_ms / 2``
      the consumer extends the entries it holds. Keep it at or below the
      smallest ``reclaim`` ``min_idle_ms`` (and Reap ``min_idle_ms``) used
      in the group.

    Ordered consumption (``ordered=True``, a partitioned stream only;
    INVALID_ARGUMENT on a plain one): each partition is owned by one
    ordered consumer of the group at a time and re-delivered from its
    oldest pending entry when it changes hands (``pending_first`` is
    implied). The consumer sends each partition's acks in the order it
    received the entries, holding an ack back until the earlier ones are
    acked; a ``nack`` drops the later entries of its partition (not yet
    handed out, or acked), and those that arrive before its Confirm,
    because the gateway delivers them again after the nacked one. So ack or
    nack every entry you receive. ``process`` does that for you.

    A gateway that cannot be reached at all is retried the same way, forever:
    a consumer outlives gateway restarts and deploys. Iterate in one thread;
    ``ack``, ``nack``, ``extend`` and ``close()`` may be called from any
    thread, and ``close()`` ends the iteration. Errors other than the
    reconnectable ones raise ``StreamgateError`` from the iteration (e.g.
    NOT_FOUND for a missing group without ``create_group``).
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
        ack_batch_size: int = 100,
        ack_delay_ms: float = 10.0,
        lease_ms: int = 30_000,
        ordered: bool = False,
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
        self.ack_batch_size = max(ack_batch_size, 1)
        self.ack_delay_ms = ack_delay_ms
        self.lease_ms = lease_ms
        self.ordered = ordered
        self.backoff = backoff
        #: How many times the subscription was re-established.
        self.reconnects = 0
        #: The most recent heartbeat, or None before the first one.
        self.last_heartbeat: Optional[Heartbeat] = None
        #: Extend messages the lease keeper sent (for observability).
        self.extensions_sent = 0
        self._closed = threading.Event()
        self._cond = threading.Condition()
        self._generation = 0  # of the current Consume call
        self._ending: Optional[int] = None  # generation being half-closed
        self._streaming = False  # iterating: acks go in band
        self._call: Optional[grpc.RpcContext] = None
        self._reader: Optional[threading.Thread] = None
        self._acks: Optional[_Op] = None  # queued acks, not yet a message
        self._acks_due = 0.0
        self._outbox: deque[_Op] = deque()  # messages to send, in order
        self._sent: deque[_Op] = deque()  # sent, awaiting their Confirm
        self._held: dict[str, None] = {}  # delivered, not acked or nacked
        self._lines = _Lines()  # ordered mode: acks in the order received
        self._lanes: Optional[_Lanes] = None  # process()'s, while it runs

    def __iter__(self) -> Iterator[Entry]:
        with closing(self._received()) as received:
            for batch in received:
                for entry in batch:
                    if self._hand_out(entry):
                        yield entry

    def batches(self) -> Iterator[list[Entry]]:
        """Yields entries one gateway batch (one Redis read) at a time, which
        suits processing and acknowledging in bulk."""
        with closing(self._received()) as received:
            for batch in received:
                batch = [e for e in batch if self._hand_out(e)]
                if batch:
                    yield batch

    def process(
        self,
        handler: Callable[[Entry], object],
        *,
        concurrency: int = 1,
        nack_delay_ms: int = 0,
    ) -> None:
        """Runs ``handler`` on every entry, on ``concurrency`` threads, until
        ``close()``: when it returns the entry is acked, when it raises the
        entry is nacked (re-delivered after ``nack_delay_ms``; the failure is
        logged).

        Ordered, one partition's entries are handled one after the other, in
        the order received, and different partitions in parallel; after a
        failure the entry and the later ones of its partition come again, in
        order. Unordered, entries are handled in parallel as they come, with
        no order among them.

        ``close()`` (from any thread) hands out nothing more and waits for
        the running handlers to return (but the calling one), so their acks
        go out; entries not handed out stay pending and come again. Errors
        other than the reconnectable ones raise from here, once the running
        handlers returned."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        lanes = _Lanes(self.ordered)
        self._lanes = lanes
        threads = [threading.Thread(target=self._work, args=(lanes, handler, nack_delay_ms),
                                    name=f"streamgate-handler-{n}", daemon=True)
                   for n in range(concurrency)]
        for thread in threads:
            thread.start()
        try:
            with closing(self._received()) as received:
                for batch in received:
                    lanes.put(batch)
        finally:
            lanes.stop()
            for thread in threads:
                thread.join()
            self._lanes = None

    def _work(self, lanes: _Lanes, handler: Callable[[Entry], object], nack_delay_ms: int) -> None:
        """A handler thread of ``process``: takes an entry of a lane no other
        thread holds, hands it to ``handler``, acks or nacks it."""
        while (job := lanes.take()) is not None:
            lane, entry = job
            try:
                if not self._hand_out(entry):
                    continue  # dropped by a nack: comes again
                try:
                    handler(entry)
                except Exception as err:
                    log.warning("handler failed on %s of %s (nacked): %r", entry.id, self.stream, err)
                    self.nack(entry, nack_delay_ms)
                else:
                    self.ack(entry)
            finally:
                lanes.done(lane)

    def _hand_out(self, entry: Entry) -> bool:
        """Whether a received entry goes to the application: not when a nack
        dropped it (ordered mode)."""
        if not self.ordered:
            return True
        with self._cond:
            return self._lines.hand_out(entry)

    def _received(self) -> Generator[list[Entry], None, None]:
        """Every batch received, over reconnects: what the iterations and
        ``process`` hand out."""
        pending_first = self.pending_first
        delays = self.backoff.delays()
        with self._cond:
            self._streaming = True
        try:
            while not self._closed.is_set():
                started = time.monotonic()
                try:
                    # closing(): leaving the loop early ends the call at once.
                    with closing(self._consume(pending_first)) as subscription:
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
        finally:
            with self._cond:
                self._streaming = False
                left = self._take_unsent()
            _fail(left, "the consumer stopped before the gateway confirmed")

    def _open_request(self, pending_first: bool) -> es.SubscribeRequest:
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
            ordered=self.ordered,
        )
        if self.reclaim is not None:
            request.reclaim.CopyFrom(self.reclaim.to_pb())
        if self.heartbeat_ms is not None:
            request.heartbeat_ms = self.heartbeat_ms
        return request

    def _consume(self, pending_first: bool) -> Generator[list[Entry], None, None]:
        """One Consume call: yields its batches, records heartbeats; a
        reader thread takes every response off the call (so Confirms arrive
        while a handler runs) and hands batches and the end over."""
        inbox: queue.Queue[tuple[str, object]] = queue.Queue()
        with self._cond:
            generation = self._generation
            call = self.client.events.Consume(self._requests(generation, self._open_request(pending_first)))
            reader = threading.Thread(target=self._read, args=(call, generation, inbox),
                                      name="streamgate-consume", daemon=True)
            self._call, self._reader = call, reader
        reader.start()
        finished = False
        try:
            while True:
                kind, item = inbox.get()
                if kind == "batch":
                    if self._closed.is_set():
                        continue  # not handed out: stays pending, comes again
                    yield item  # type: ignore[misc]
                elif kind == "heartbeat":
                    assert isinstance(item, Heartbeat)
                    self.last_heartbeat = item
                    if self.on_heartbeat is not None:
                        self.on_heartbeat(item)
                else:
                    finished = True
                    if isinstance(item, StreamgateError):
                        raise item
                    return
        finally:
            if not finished:  # left early: half-close so queued acks go out
                self._end(generation, reader, call)

    def _end(self, generation: int, reader: threading.Thread, call: grpc.RpcContext,
             timeout: float = 10.0) -> None:
        """Half-closes one call (queued acks are sent first), waits for the
        gateway to confirm them and end it, then cancels what is left."""
        with self._cond:
            self._ending = generation
            self._cond.notify_all()
        if reader is not threading.current_thread():
            reader.join(timeout)
        call.cancel()

    def _requests(self, generation: int, open: es.SubscribeRequest) -> Iterator[es.ConsumeRequest]:
        """The client side of one Consume call: `open`, then every ack, nack
        and extend message as it becomes due; half-closes when asked."""
        yield es.ConsumeRequest(open=open)
        half = self.lease_ms / 2000
        next_extend = time.monotonic() + half
        while True:
            with self._cond:
                while True:
                    if generation != self._generation:
                        return
                    ending = self._ending == generation or self._closed.is_set()
                    now = time.monotonic()
                    if self._acks is not None and (
                        len(self._acks.ids) >= self.ack_batch_size or now >= self._acks_due or ending
                    ):
                        self._pack_acks()
                    if self.lease_ms > 0 and now >= next_extend and not ending:
                        next_extend = now + half
                        if self._held:
                            extend = _Op(_EXTEND)
                            extend.add(list(self._held), None)
                            self._outbox.append(extend)
                            self.extensions_sent += 1
                    if self._outbox:
                        op = self._outbox.popleft()
                        self._sent.append(op)
                        break
                    if ending:
                        return
                    waits = [next_extend - now] if self.lease_ms > 0 else []
                    if self._acks is not None:
                        waits.append(self._acks_due - now)
                    self._cond.wait(max(min(waits), 0.0) if waits else None)
            yield op.to_pb()

    def _read(self, call: grpc.RpcContext, generation: int,
              inbox: queue.Queue[tuple[str, object]]) -> None:
        """Takes every response off one call (reader thread)."""
        end: Optional[StreamgateError] = None
        try:
            for response in call:
                kind = response.WhichOneof("kind")
                if kind == "batch":
                    entries = [Entry.from_pb(e) for e in response.batch.entries]
                    with self._cond:
                        if self.ordered:  # some may wait for a nack's Confirm
                            entries = [e for e in entries if self._lines.receive(e)]
                        self._held.update((e.id, None) for e in entries)
                    if entries:
                        inbox.put(("batch", entries))
                elif kind == "heartbeat":
                    inbox.put(("heartbeat", Heartbeat.from_pb(response.heartbeat)))
                elif kind == "confirm":
                    released: list[Entry] = []
                    with self._cond:
                        op = self._sent.popleft() if self._sent else None
                        if op is not None and op.op == _NACK and self.ordered:
                            released = self._lines.confirmed(op.ids, set(response.confirm.done))
                            self._held.update((e.id, None) for e in released)
                    if op is not None:
                        op.confirm(response.confirm)
                    if released:
                        inbox.put(("batch", released))
        except grpc.RpcError as err:
            end = StreamgateError.from_rpc(err)
        with self._cond:
            self._generation += 1  # ends this call's request iterator
            self._lines.call_ended()
            self._call = None
            # Unconfirmed messages go out again on the next call, first;
            # lease extensions are re-sent by the next call's own keeper.
            self._outbox.extendleft(reversed([op for op in self._sent if op.parts]))
            self._sent.clear()
            self._cond.notify_all()
        inbox.put(("end", end))

    # -- in-band operations -----------------------------------------------------

    def _pack_acks(self) -> None:
        """Turns the queued acks into one message. Holds the lock."""
        if self._acks is not None:
            self._outbox.append(self._acks)
            self._acks = None

    def _take_unsent(self) -> list[_Op]:
        """Removes every message not yet confirmed, and the acks held back
        in ordered mode. Holds the lock."""
        left = [*self._outbox, *self._sent]
        if self._acks is not None:
            left.append(self._acks)
        held = _Op(_ACK)
        for slot in self._lines.clear():
            assert slot.acked is not None
            held.add([slot.entry.id], slot.acked.part())
        if held.parts:
            left.append(held)
        self._outbox.clear()
        self._sent.clear()
        self._acks = None
        return left

    def _queue_ack(self, ids: list[str], future: Future[int]) -> None:
        """Adds acks to the next ack message. Holds the lock."""
        for id in ids:
            self._held.pop(id, None)
        if self._acks is None:
            self._acks = _Op(_ACK)
            self._acks_due = time.monotonic() + self.ack_delay_ms / 1000
        self._acks.add(ids, future)
        self._cond.notify_all()

    def ack(self, entries: EntryOrId | Iterable[EntryOrId]) -> Future[int]:
        """Acknowledges one entry or many (entries or IDs); the future
        resolves to how many were pending for this consumer, once the
        gateway confirms. Acknowledge only after processing: an entry that is
        never acknowledged is re-delivered (pending_first), reclaimed or
        reaped.

        While the consumer is iterating, acks are queued and sent in band in
        batches; otherwise this is one Ack call (the count is then how many
        were pending in the group). Ordered, an ack also waits until the
        entries received before it in its partition are acked (see
        ``_Lines``); an entry a nack dropped counts 0 and is not acked."""
        items = _items(entries)
        ids = _ids(items)
        future: Future[int] = Future()
        with self._cond:
            if ids and self._streaming:
                if not self.ordered:
                    self._queue_ack(ids, future)
                    return future
                tally = _Tally(future, len(items))
                for item in items:
                    slot = self._lines.find(item)
                    if slot is None:  # not in a line: nothing to wait for
                        self._queue_ack([_id(item)], tally.part())
                        continue
                    for due in self._lines.ack(slot, tally):
                        assert due.acked is not None
                        self._queue_ack([due.entry.id], due.acked.part())
                return future
            for id in ids:
                self._held.pop(id, None)
        return _unary(future, lambda: self.client.ack(self.stream, self.group, ids) if ids else 0)

    def nack(self, entries: EntryOrId | Iterable[EntryOrId], delay_ms: int = 0) -> Future[int]:
        """Gives one entry or many back for re-delivery after ``delay_ms``
        (0: at the next reclaim round), without acknowledging them. A
        reclaiming subscription of the group (``reclaim=...``, possibly this
        one) takes them whatever its ``min_idle_ms``; each re-delivery counts
        towards ``max_deliveries``. The future resolves to how many were
        pending for this consumer.

        Ordered, the gateway re-delivers the entry and every later one of
        its partition not acked yet, in order, after the delay (holding the
        partition back meanwhile); the consumer drops those later entries,
        and holds back the entries of the partition that arrive before the
        nack's Confirm (see ``_Lines``). An entry dropped that way is not
        nacked (it counts 0): it comes again anyway."""
        items = _items(entries)
        ids = _ids(items)
        with self._cond:
            if self.ordered and self._streaming:
                ids = [id for id, item in zip(ids, items) if self._cut(item)]
                if not ids:
                    done: Future[int] = Future()
                    done.set_result(0)
                    return done
                # Queued under the same lock as the cut, so an entry received
                # in between cannot join the line after it (_Lines, rule 3).
                self._lines.nacking(ids)
                return self._send(_NACK, ids, delay_ms, lambda: 0)
        return self._send(_NACK, ids, delay_ms, lambda: self.client.nack(
            self.stream, self.group, self.consumer, ids, delay_ms) if ids else 0)

    def _cut(self, item: EntryOrId) -> bool:
        """Ordered mode: gives a nacked entry's delivery and the later ones
        of its partition back; whether its nack is to be sent. Holds the
        lock."""
        slot = self._lines.find(item)
        if slot is None:
            return True
        cut = self._lines.nack(slot)
        for given_back in cut:
            self._held.pop(given_back.entry.id, None)
        return bool(cut)

    def extend(self, entries: EntryOrId | Iterable[EntryOrId]) -> Future[int]:
        """Resets the idle time of one entry or many pending for this
        consumer, without counting a delivery. The consumer already does so
        every ``lease_ms / 2`` for the entries it holds; call it for other
        entries of this consumer. The future resolves to how many were
        extended."""
        ids = _ids(entries)
        return self._send(_EXTEND, ids, 0, lambda: self.client.extend(
            self.stream, self.group, self.consumer, ids) if ids else 0)

    def _send(self, kind: int, ids: list[str], delay_ms: int, unary: Callable[[], int]) -> Future[int]:
        """Queues a nack or extend message (after the acks queued before it)
        while iterating, or makes the unary call."""
        future: Future[int] = Future()
        with self._cond:
            if kind == _NACK:
                for id in ids:
                    self._held.pop(id, None)
            if ids and self._streaming:
                self._pack_acks()
                op = _Op(kind, delay_ms)
                op.add(ids, future)
                self._outbox.append(op)
                self._cond.notify_all()
                return future
        return _unary(future, unary)

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

    def close(self, timeout: float = 10.0) -> None:
        """Stops the subscription (thread-safe): queued acks, nacks and
        extensions are sent and confirmed first (for up to ``timeout``
        seconds; those still unconfirmed then fail with UNAVAILABLE), then
        the stream ends and the connection closes unless the client was
        shared. Unacknowledged entries stay pending. Under ``process`` it
        first hands nothing out any more and waits (up to ``timeout``) for
        the running handlers but the calling one to return."""
        lanes = self._lanes
        if lanes is not None:
            lanes.stop(timeout)
        self._closed.set()
        with self._cond:
            call, reader, generation = self._call, self._reader, self._generation
            self._cond.notify_all()
        if call is not None and reader is not None:
            self._end(generation, reader, call, timeout)
        with self._cond:
            left = self._take_unsent()
            self._held.clear()
        _fail(left, "the consumer closed before the gateway confirmed")
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unary(future: Future[int], call: Callable[[], int]) -> Future[int]:
    """Completes ``future`` with a unary call's result or error."""
    try:
        future.set_result(call())
    except StreamgateError as err:
        future.set_exception(err)
    return future


def _fail(ops: list[_Op], why: str) -> None:
    error = StreamgateError(grpc.StatusCode.UNAVAILABLE, why)
    for op in ops:
        op.fail(error)


def _items(entries: EntryOrId | Iterable[EntryOrId]) -> list[EntryOrId]:
    """One entry or ID, or many, as a list."""
    if isinstance(entries, (Entry, str)):
        return [entries]
    return list(entries)


def _id(item: EntryOrId) -> str:
    return item.id if isinstance(item, Entry) else item


def _ids(entries: EntryOrId | Iterable[EntryOrId]) -> list[str]:
    """The IDs of one entry or ID, or of many."""
    return [_id(e) for e in _items(entries)]


def _position(id: str) -> Optional[tuple[int, tuple[int, int]]]:
    """The partition of a qualified ID ``<partition>/<ms>-<seq>`` and its
    place in it, ``(ms, seq)``; None for anything else."""
    m = re.fullmatch(r"(\d+)/(\d+)-(\d+)", id, re.ASCII)
    return (int(m[1]), (int(m[2]), int(m[3]))) if m else None


def _place(id: str) -> tuple[int, int]:
    """The ``(ms, seq)`` of a qualified ID, for comparisons within its
    partition."""
    position = _position(id)
    return position[1] if position is not None else (-1, -1)
