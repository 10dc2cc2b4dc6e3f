"""``Publisher``: single events batched over one long-lived ProduceStream.

Every ``publish`` lands in a per-stream buffer that becomes one
ProduceRequest when it holds ``max_events`` events or ``max_bytes`` bytes,
or ``linger_ms`` after its first event, whichever comes first (the shape of
Pub/Sub's publisher). Requests go out on one ProduceStream per producer,
opened on the first publish and kept open; many are in flight at once and
the gateway answers each in request order, so the answers are matched to
requests by position.

A request the gateway refuses (its answer carries a non-zero ``code``)
fails exactly the publishes it carried; the stream goes on. When the
stream itself breaks (UNAVAILABLE: the gateway restarts), it is reopened
with backoff and every unanswered request is sent again. With idempotency
keys that resend is harmless; without them an event the gateway appended
before the break is appended again: delivery to the stream is
at-least-once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Iterator, Optional

import grpc

from ._pb import entry_pb2
from ._pb import event_stream_pb2 as es
from ._pb import event_stream_pb2_grpc as es_grpc
from .backoff import RECONNECT_CODES, Backoff
from .errors import StreamgateError


@dataclass(frozen=True)
class BatchSettings:
    """When buffered events become one request: at ``max_events`` events,
    at ``max_bytes`` bytes of encoded events, or ``linger_ms`` after the
    first event of the batch (0: at once, which still batches events
    published while a request is being written)."""

    max_events: int = 100
    max_bytes: int = 1 << 20
    linger_ms: float = 10.0


class _Request:
    """One ProduceRequest in the making, with a future per event."""

    __slots__ = ("stream", "events", "futures", "size", "deadline")

    def __init__(self, stream: str, deadline: float) -> None:
        self.stream = stream
        self.events: list[entry_pb2.Event] = []
        self.futures: list[Future[str]] = []
        self.size = 0
        self.deadline = deadline

    def to_pb(self) -> es.ProduceRequest:
        return es.ProduceRequest(stream=self.stream, events=self.events)

    def answer(self, response: es.ProduceStreamResponse) -> None:
        if response.code != 0:
            self.fail(StreamgateError.from_code(response.code, response.message))
        elif len(response.ids) != len(self.futures):
            self.fail(StreamgateError(
                grpc.StatusCode.INTERNAL,
                f"{len(response.ids)} IDs in the answer to {len(self.futures)} events",
            ))
        else:
            for future, id in zip(self.futures, response.ids):
                future.set_result(id)

    def fail(self, error: BaseException) -> None:
        for future in self.futures:
            future.set_exception(error)


class Publisher:
    """The batching machinery behind ``Producer.publish``; thread-safe."""

    def __init__(self, stub: es_grpc.EventStreamStub, settings: BatchSettings,
                 backoff: Backoff) -> None:
        if settings.max_events < 1 or settings.max_bytes < 1 or settings.linger_ms < 0:
            raise ValueError(f"invalid batch settings: {settings}")
        self._stub = stub
        self._settings = settings
        self._backoff = backoff
        self._cond = threading.Condition()
        self._buffers: dict[str, _Request] = {}
        self._unsent: deque[_Request] = deque()
        self._inflight: deque[_Request] = deque()
        self._closing = False
        self._abandoned = threading.Event()
        self._generation = 0
        self._call: Optional[grpc.RpcContext] = None
        self._thread: Optional[threading.Thread] = None
        #: ProduceRequests written to the gateway (resends included).
        self.requests_sent = 0
        #: ProduceStream calls opened (1 unless the stream broke).
        self.streams_opened = 0

    def publish(self, stream: str, event: entry_pb2.Event) -> Future[str]:
        size = event.ByteSize() + 4  # the event's own length prefix and tag, roughly
        future: Future[str] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError("publish on a closed producer")
            batch = self._buffers.get(stream)
            if batch is not None and batch.size + size > self._settings.max_bytes:
                self._ship(stream)
                batch = None
            if batch is None:
                deadline = time.monotonic() + self._settings.linger_ms / 1000
                batch = self._buffers[stream] = _Request(stream, deadline)
            batch.events.append(event)
            batch.futures.append(future)
            batch.size += size
            if len(batch.events) >= self._settings.max_events or batch.size >= self._settings.max_bytes:
                self._ship(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamgate-publisher",
                                                 daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return future

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends every buffered event now and waits until each publish so far
        is answered (or ``timeout`` seconds passed: then False)."""
        with self._cond:
            for stream in list(self._buffers):
                self._ship(stream)
            futures = [f for r in (*self._inflight, *self._unsent) for f in r.futures]
            self._cond.notify_all()
        _, not_done = wait(futures, timeout)
        return not not_done

    def close(self, timeout: Optional[float] = None) -> None:
        """Sends what is buffered, waits for the answers and half-closes the
        stream. After ``timeout`` seconds (a gateway that stays away), the
        publishes still unanswered fail with UNAVAILABLE."""
        with self._cond:
            self._closing = True
            for stream in list(self._buffers):
                self._ship(stream)
            thread = self._thread
            self._cond.notify_all()
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            self._abandoned.set()
            with self._cond:
                call = self._call
                self._cond.notify_all()
            if call is not None:
                call.cancel()
            thread.join()

    # -- internals (hold self._cond where noted) -----------------------------

    def _ship(self, stream: str) -> None:
        """Moves a buffer to the send queue. Holds the lock."""
        self._unsent.append(self._buffers.pop(stream))

    def _ship_due(self, now: float) -> Optional[float]:
        """Ships lingering buffers whose time has come; returns the seconds
        until the next one is due (None: no buffer). Holds the lock."""
        next_due: Optional[float] = None
        for stream, batch in list(self._buffers.items()):
            if batch.deadline <= now:
                self._ship(stream)
            elif next_due is None or batch.deadline - now < next_due:
                next_due = batch.deadline - now
        return next_due

    def _requests(self, generation: int) -> Iterator[es.ProduceRequest]:
        """The request side of one ProduceStream call: every request as it
        becomes ready; ends (half-closes) once the producer is closing and
        everything is sent, or when the call was replaced."""
        while True:
            with self._cond:
                while True:
                    if generation != self._generation or self._abandoned.is_set():
                        return
                    wait_for = self._ship_due(time.monotonic())
                    if self._unsent:
                        request = self._unsent.popleft()
                        self._inflight.append(request)
                        self.requests_sent += 1
                        break
                    if self._closing and not self._buffers:
                        return
                    self._cond.wait(wait_for)
            yield request.to_pb()

    def _has_work(self) -> bool:
        return bool(self._unsent or self._buffers or self._inflight)

    def _run(self) -> None:
        """Opens the stream (again after a break), matches answers to
        requests, and ends once the producer is closed and all is answered."""
        delays = self._backoff.delays()
        while True:
            with self._cond:
                while not (self._has_work() or self._closing):
                    self._cond.wait()
                if (self._closing and not self._has_work()) or self._abandoned.is_set():
                    break
                generation = self._generation
                call = self._stub.ProduceStream(self._requests(generation))
                self._call = call
                self.streams_opened += 1
            error: Optional[StreamgateError] = None
            try:
                for response in call:
                    with self._cond:
                        request = self._inflight.popleft()
                    delays = self._backoff.delays()  # the stream works
                    request.answer(response)
            except grpc.RpcError as err:
                error = StreamgateError.from_rpc(err)
            with self._cond:
                self._call = None
                self._generation += 1  # ends the old request iterator
                self._cond.notify_all()
                lost = list(self._inflight)
                self._inflight.clear()
                retry = (error is None or error.code in RECONNECT_CODES) and not self._abandoned.is_set()
                if retry:  # unanswered requests go out again, first
                    self._unsent.extendleft(reversed(lost))
                    lost = []
                else:  # e.g. UNAUTHENTICATED: what is queued would fail alike
                    lost.extend(self._unsent)
                    self._unsent.clear()
            for request in lost:
                request.fail(error or StreamgateError(grpc.StatusCode.UNAVAILABLE, "producer closed"))
            if error is not None and retry and self._abandoned.wait(next(delays)):
                break
        with self._cond:  # abandoned: whatever is left fails
            left = [*self._inflight, *self._unsent, *self._buffers.values()]
            self._inflight.clear()
            self._unsent.clear()
            self._buffers.clear()
        for request in left:
            request.fail(StreamgateError(grpc.StatusCode.UNAVAILABLE,
                                         "producer closed before the gateway answered"))
