"""``Tail``: follow a stream live, outside any consumer group.

A tail is a plain XREAD: nothing is pending and nothing is acknowledged, so
it suits dashboards and ``tail -f``-style tools, not work that must be done
once. Heartbeats are consumed here; ``last_heartbeat`` and ``on_heartbeat``
make them observable.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Optional

import grpc

from ._pb import event_stream_pb2 as es
from .errors import StreamgateError, translated
from .model import Entry, Heartbeat


class Tail:
    """Entries of ``stream`` as they are appended: ``for entry in tail:``.

    Made by ``Client.tail``, which returns once the gateway has set the read
    up, so with ``start_id="$"`` every entry appended after that call returns
    is seen. Entries carry ``delivery_count`` 0. The iteration raises
    ``StreamgateError`` when the call fails, e.g. UNAVAILABLE when the
    gateway shuts down (a tail does not reconnect by itself: start a new one
    with ``start_id`` set to the last ID seen). ``close()`` (thread-safe, or
    leave the ``with`` block) cancels the call and ends the iteration.
    """

    def __init__(
        self,
        events: Any,
        request: es.TailRequest,
        on_heartbeat: Optional[Callable[[Heartbeat], None]] = None,
    ) -> None:
        self.stream = request.stream
        self.on_heartbeat = on_heartbeat
        #: The most recent heartbeat, or None before the first one.
        self.last_heartbeat: Optional[Heartbeat] = None
        self._closed = threading.Event()
        self._call = events.Tail(request)
        # The gateway answers with headers once the read is set up (`$`
        # resolved); a failed call also ends this wait and raises below.
        with translated():
            self._call.initial_metadata()

    def __iter__(self) -> Iterator[Entry]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Entry]]:
        """Entries one gateway batch (one Redis read) at a time."""
        try:
            for response in self._call:
                kind = response.WhichOneof("kind")
                if kind == "batch":
                    yield [Entry.from_pb(e) for e in response.batch.entries]
                elif kind == "heartbeat":
                    self.last_heartbeat = Heartbeat.from_pb(response.heartbeat)
                    if self.on_heartbeat is not None:
                        self.on_heartbeat(self.last_heartbeat)
        except grpc.RpcError as err:
            if self._closed.is_set():
                return
            raise StreamgateError.from_rpc(err) from err
        finally:
            self._call.cancel()

    def close(self) -> None:
        """Stops following the stream."""
        self._closed.set()
        self._call.cancel()

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
