"""End-to-end tests of the Python client against the real gateway and Redis."""

from __future__ import annotations

import itertools
import time
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional

import grpc
import pytest

import streamgate
from streamgate import (
    Client,
    Consumer,
    Entry,
    Event,
    Heartbeat,
    Producer,
    Reclaim,
    StreamgateError,
    Tail,
)

from streamgate._pb import entry_pb2
from streamgate._pb import event_stream_pb2 as es

from conftest import Gateway, RedisServer, wait_until


class Collector:
    """Iterates a Consumer in a thread, recording every entry it receives and
    acknowledging those ``should_ack`` accepts (default: all). ``handle``,
    if given, replaces the acknowledgement: it decides per entry (ack, nack,
    keep)."""

    def __init__(
        self,
        consumer: Consumer,
        should_ack: Callable[[Entry], bool] = lambda e: True,
        handle: Optional[Callable[[Entry], None]] = None,
    ):
        self.consumer = consumer
        self.should_ack = should_ack
        self.handle = handle
        self.entries: list[Entry] = []
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        # Held while an entry is handled: stop() closes the consumer (and its
        # channel) only between entries, never under an ack in flight.
        self._handling = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for entry in self.consumer:
                with self._handling:
                    if self._stopped:
                        return  # arrived as stop() closed the consumer
                    with self._lock:
                        self.entries.append(entry)
                    if self.handle is not None:
                        self.handle(entry)
                    elif self.should_ack(entry):
                        self.consumer.ack(entry)
        except BaseException as err:  # surfaced by received()/stop()
            self.error = err

    def received(self) -> list[Entry]:
        if self.error is not None:
            raise AssertionError(f"consumer failed: {self.error!r}") from self.error
        with self._lock:
            return list(self.entries)

    def ids(self) -> list[str]:
        return [e.id for e in self.received()]

    def wait_for(self, n: int, timeout: float = 15.0) -> list[Entry]:
        """Waits until at least ``n`` entries arrived; returns them all."""
        def enough() -> Optional[list[Entry]]:
            got = self.received()
            return got if len(got) >= n else None

        return wait_until(f"{n} entries for {self.consumer.consumer}", enough, timeout)

    def stop(self) -> None:
        with self._handling:
            self._stopped = True
            self.consumer.close()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "consumer thread did not stop after close()"


def consumer(addr: str | Client, stream: str, group: str, name: str, **kw: object) -> Consumer:
    kw.setdefault("create_group", True)
    kw.setdefault("group_start_id", "0")
    return Consumer(addr, stream, group, name, **kw)  # type: ignore[arg-type]


def test_produce_subscribe_ack(gateway: Gateway, client: Client, stream: str) -> None:
    with Producer(gateway.addr) as producer:
        first = producer.produce(stream, "order.placed", {"order_id": "1001", "total": "9.90"})
        rest = producer.produce_batch(stream, [
            ("order.paid", {"order_id": "1001"}),
            Event("order.shipped", {"order_id": "1001"}, {"label": b"\xff\x00pdf"}),
        ])
    ids = [first, *rest]
    assert len(set(ids)) == 3 and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    c = Collector(consumer(gateway.addr, stream, "g", "c1"), should_ack=lambda e: False)
    try:
        got = c.wait_for(3)
    finally:
        c.stop()
    assert [e.id for e in got] == ids
    assert [e.type for e in got] == ["order.placed", "order.paid", "order.shipped"]
    assert got[0].fields == {"order_id": "1001", "total": "9.90"}
    assert got[2].binary_fields == {"label": b"\xff\x00pdf"}
    assert all(e.delivery_count == 1 and e.ts_ms > 0 for e in got)

    assert [p.id for p in client.list_pending(stream, "g")] == ids
    assert client.ack(stream, "g", ids[:1]) == 1
    with Consumer(client, stream, "g", "c1") as c1:  # shares the client's channel
        assert c1.ack(got[1:]).result(timeout=15) == 2
        assert c1.ack(got).result(timeout=15) == 0  # nothing pending any more
    assert client.list_pending(stream, "g") == []


def test_reserved_field_is_invalid_argument(gateway: Gateway, stream: str) -> None:
    with Producer(gateway.addr) as producer, pytest.raises(StreamgateError) as err:
        producer.produce(stream, "x", {"ts_ms": "1"})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not err.value.retryable


def test_missing_group_without_create_group_is_not_found(gateway: Gateway, stream: str) -> None:
    with Consumer(gateway.addr, stream, "nope", "c1") as c, pytest.raises(StreamgateError) as err:
        next(iter(c))
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert "nope" in err.value.details


def test_two_groups_each_get_every_entry(gateway: Gateway, client: Client, stream: str) -> None:
    assert client.create_group(stream, "billing")
    assert client.create_group(stream, "shipping")
    ids = client.produce_batch(stream, [Event("order.placed", {"n": str(i)}) for i in range(10)])
    billing = Collector(consumer(gateway.addr, stream, "billing", "b1", batch_size=3))
    shipping = Collector(consumer(gateway.addr, stream, "shipping", "s1"))
    try:
        assert [e.id for e in billing.wait_for(10)] == ids
        assert [e.id for e in shipping.wait_for(10)] == ids
    finally:
        billing.stop()
        shipping.stop()
    wait_until("both groups fully acknowledged",
               lambda: all(g.pending == 0 for g in client.list_groups(stream)))


def test_two_consumers_in_one_group_split_work(gateway: Gateway, client: Client, stream: str) -> None:
    client.create_group(stream, "workers")
    a = Collector(consumer(gateway.addr, stream, "workers", "a", batch_size=1))
    b = Collector(consumer(gateway.addr, stream, "workers", "b", batch_size=1))
    ids: list[str] = []

    def delivered() -> int:
        return len(a.ids()) + len(b.ids())

    def produce_one() -> bool:
        ids.append(client.produce(stream, "job", {"n": str(len(ids))}))
        wait_until(f"entry {len(ids)} delivered", lambda: delivered() >= len(ids))
        return bool(a.ids() and b.ids())

    try:
        # Until both consumers have joined, one of them takes everything, and
        # Redis 7.0 lists a consumer only after its first successful read. So
        # produce one entry at a time until both got one (Redis serves blocked
        # readers first come, first served), then a batch for both to share.
        wait_until("both consumers to receive work", produce_one)
        ids += client.produce_batch(stream, [Event("job", {"n": str(i)}) for i in range(20)])
        wait_until("all entries delivered", lambda: delivered() >= len(ids))
    finally:
        a.stop()
        b.stop()
    got_a, got_b = a.ids(), b.ids()
    assert len(set(got_a)) == len(got_a) and len(set(got_b)) == len(got_b)
    assert not set(got_a) & set(got_b), "an entry went to both consumers"
    assert sorted(got_a + got_b) == sorted(ids)
    wait_until("no pending entries", lambda: client.list_pending(stream, "workers") == [])


def test_peer_reaps_entries_of_a_crashed_consumer(gateway: Gateway, client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("order.paid", {"n": str(i)}) for i in range(3)])
    crashed = Collector(consumer(gateway.addr, stream, "g", "crashy"), should_ack=lambda e: False)
    crashed.wait_for(3)
    crashed.stop()  # "crashes": read, never acknowledged

    claimed: dict[str, Entry] = {}

    def reap_all() -> bool:
        result = client.reap(stream, "g", "peer", min_idle_ms=100)
        assert result.deleted_ids == []
        claimed.update((e.id, e) for e in result.claimed)
        return len(claimed) == 3

    wait_until("the idle entries to be reaped", reap_all)
    assert sorted(claimed) == ids
    assert {e.delivery_count for e in claimed.values()} == {2}
    assert claimed[ids[0]].type == "order.paid" and claimed[ids[0]].fields == {"n": "0"}
    pending = client.list_pending(stream, "g")
    assert [(p.id, p.consumer, p.delivery_count) for p in pending] == [(i, "peer", 2) for i in ids]
    by_name = {c.name: c for c in client.list_consumers(stream, "g")}
    assert by_name["crashy"].pending == 0 and by_name["peer"].pending == 3

    with Consumer(client, stream, "g", "peer") as peer:
        assert peer.ack(ids).result(timeout=15) == 3


def test_replay(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("t", {"n": str(i)}) for i in range(7)])
    assert [e.id for e in client.replay(stream)] == ids
    assert [e.id for e in client.replay(stream, page_size=2)] == ids
    assert [e.id for e in client.replay(stream, reverse=True)] == ids[::-1]
    assert [e.id for e in client.replay(stream, limit=3)] == ids[:3]
    assert [e.id for e in client.replay(stream, ids[2], ids[4])] == ids[2:5]
    assert [e.id for e in client.replay(stream, ids[2], ids[4], reverse=True)] == ids[4:1:-1]
    assert [e.fields["n"] for e in itertools.islice(client.replay(stream, page_size=1), 2)] == ["0", "1"]
    assert all(e.delivery_count == 0 and not e.redelivered for e in client.replay(stream))
    assert list(client.replay(f"{stream}-missing")) == []


def test_trim(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("t") for _ in range(10)], max_len=0)
    assert client.trim(stream, max_len=4, exact=True) == 6
    info = client.describe_stream(stream)
    assert (info.length, info.first_entry_id, info.last_entry_id) == (4, ids[6], ids[9])
    assert client.trim(stream, min_id=ids[8], exact=True) == 2
    assert [e.id for e in client.replay(stream)] == ids[8:]
    with pytest.raises(ValueError):
        client.trim(stream, max_len=1, min_id=ids[9])


def test_admin_views_and_remove_consumer(gateway: Gateway, client: Client, stream: str) -> None:
    assert client.create_group(stream, "g", "$") is True
    assert client.create_group(stream, "g") is False  # idempotent
    ids = client.produce_batch(stream, [Event("t") for _ in range(4)])
    c = Collector(consumer(gateway.addr, stream, "g", "c1"), should_ack=lambda e: False)
    c.wait_for(4)
    c.stop()

    info = client.describe_stream(stream)
    assert (info.length, info.group_count, info.last_entry_id) == (4, 1, ids[-1])
    [listed] = [s for s in client.list_streams(page_limit=2) if s.name == stream]
    assert (listed.length, listed.last_entry_id, listed.group_count) == (4, ids[-1], 1)
    [group] = client.list_groups(stream)
    assert (group.name, group.consumers, group.pending, group.last_delivered_id) == ("g", 1, 4, ids[-1])
    assert group.lag == 0
    [c1] = client.list_consumers(stream, "g")
    assert (c1.name, c1.pending) == ("c1", 4)
    assert len(client.list_pending(stream, "g", consumer="c1", count=2)) == 2
    assert client.list_pending(stream, "g", consumer="other") == []

    with pytest.raises(StreamgateError) as err:
        client.remove_consumer(stream, "g", "c1")  # would destroy 4 pending entries
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    removed = client.remove_consumer(stream, "g", "c1", handover_to="c2")
    assert (removed.removed, removed.handed_over) == (True, 4)
    assert [(c.name, c.pending) for c in client.list_consumers(stream, "g")] == [("c2", 4)]

    client.set_group_cursor(stream, "g", "0")
    assert client.list_groups(stream)[0].last_delivered_id == "0-0"
    assert client.delete_group(stream, "g") is True
    assert client.delete_group(stream, "g") is False
    with pytest.raises(StreamgateError) as err:
        client.list_consumers(stream, "g")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_remove_unknown_consumer_is_not_internal(client: Client, stream: str) -> None:
    # docs/errors.md: INTERNAL is "never for anything a client can cause".
    # The proto promises `removed = false` for a consumer that did not exist;
    # NOT_FOUND would also be a client-side answer.
    client.create_group(stream, "g")
    try:
        assert client.remove_consumer(stream, "g", "ghost").removed is False
    except StreamgateError as err:
        assert err.code == grpc.StatusCode.NOT_FOUND, err


def test_consumer_resumes_after_gateway_restart(redis_server: RedisServer, client: Client, stream: str) -> None:
    """SIGTERM the consumer's gateway mid-iteration, start a new one on the same
    port: the consumer reconnects by itself and receives its unacknowledged
    entry again (pending_first) followed by entries produced meanwhile."""
    gw = Gateway(redis_server.url)
    port_addr = gw.addr
    c = Collector(consumer(gw.addr, stream, "g", "c1"), should_ack=lambda e: e.fields.get("ack") != "no")
    try:
        acked = client.produce(stream, "t", {"ack": "yes"})
        kept = client.produce(stream, "t", {"ack": "no"})
        c.wait_for(2)
        wait_until("the first entry acknowledged",
                   lambda: [p.id for p in client.list_pending(stream, "g")] == [kept])

        gw.terminate()
        # Produced through the session's gateway while the consumer's is down.
        new = client.produce(stream, "t", {"ack": "yes"})
        gw = Gateway(redis_server.url, listen=port_addr)

        got = c.wait_for(4)
    finally:
        c.stop()
        gw.terminate()
    assert [e.id for e in got] == [acked, kept, kept, new]
    assert [e.delivery_count for e in got] == [1, 1, 2, 1]
    assert [e.redelivered for e in got] == [False, False, True, False]
    assert c.consumer.reconnects >= 1
    assert [(p.id, p.delivery_count) for p in client.list_pending(stream, "g")] == [(kept, 2)]


# -- delivery guarantees: nack, extend, reclaim, dead letters, back-pressure --

#: Reclaim settings that recover only Nack'ed entries during a test: nothing
#: stays idle for a minute, and rounds run as often as the gateway allows
#: (its --block-ms bounds the resolution).
NACK_ONLY = Reclaim(min_idle_ms=60_000, interval_ms=50)


def pending_of(client: Client, stream: str, group: str, name: str) -> list[str]:
    return [p.id for p in client.list_pending(stream, group, consumer=name)]


def test_nack_redelivers_to_a_reclaiming_consumer(client: Client, stream: str) -> None:
    first, second = client.produce_batch(stream, [Event("job", {"n": "0"}), Event("job", {"n": "1"})])
    nacked: list[int] = []

    def handle(entry: Entry) -> None:
        if entry.id == first and not entry.redelivered:
            nacked.append(c.consumer.nack(entry).result(timeout=15))  # delay 0: at the next reclaim round
        else:
            c.consumer.ack(entry)

    c = Collector(consumer(client, stream, "g", "w1", reclaim=NACK_ONLY), handle=handle)
    try:
        got = c.wait_for(3)
    finally:
        c.stop()
    assert nacked == [1]
    assert [(e.id, e.delivery_count, e.redelivered) for e in got] == [
        (first, 1, False),
        (second, 1, False),
        (first, 2, True),
    ]
    assert got[2].fields == {"n": "0"} and got[2].type == "job"
    wait_until("everything acknowledged", lambda: client.list_pending(stream, "g") == [])
    # Nothing is pending any more: Nack and Extend affect nothing.
    assert client.nack(stream, "g", "w1", [first], delay_ms=1000) == 0
    assert client.extend(stream, "g", "w1", [first]) == 0


def test_nack_with_a_delay_waits_for_it(client: Client, stream: str) -> None:
    [id] = client.produce_batch(stream, [Event("job")])
    c = Collector(consumer(client, stream, "g", "w1"), should_ack=lambda e: False)
    c.wait_for(1)
    c.stop()
    # A delay far beyond the test: a reclaiming peer must not take it, even
    # with a min_idle_ms the entry has long exceeded.
    assert client.nack(stream, "g", "w1", [id], delay_ms=3_600_000) == 1
    assert client.nack(stream, "g", "someone-else", [id]) == 0  # not pending for them
    beats: list[Heartbeat] = []
    p = Collector(Consumer(client, stream, "g", "w2", reclaim=Reclaim(min_idle_ms=1, interval_ms=50),
                           heartbeat_ms=50, on_heartbeat=beats.append))
    try:
        # Several heartbeats mean several empty turns, each with a reclaim
        # round that skipped the scheduled entry.
        wait_until("three heartbeats of the idle peer", lambda: len(beats) >= 3)
        assert p.received() == []
    finally:
        p.stop()
    assert [(x.id, x.consumer) for x in client.list_pending(stream, "g")] == [(id, "w1")]


def test_extend_returns_the_count(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("job", {"n": str(i)}) for i in range(3)])
    c = Collector(consumer(client, stream, "g", "w1"), should_ack=lambda e: False)
    got = c.wait_for(3)
    c.stop()
    w1 = Consumer(client, stream, "g", "w1")
    assert w1.extend(got[0]).result(timeout=15) == 1
    assert w1.extend(got[1:]).result(timeout=15) == 2
    assert w1.extend([]).result(timeout=15) == 0
    assert client.extend(stream, "g", "someone-else", ids) == 0  # not theirs
    # Extending resets the idle time but is not a delivery.
    assert [(p.id, p.delivery_count) for p in client.list_pending(stream, "g")] == [(i, 1) for i in ids]
    assert w1.ack(got).result(timeout=15) == 3
    assert w1.extend(ids).result(timeout=15) == 0  # no longer pending


def test_poison_entry_ends_in_the_dead_letter_stream(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [
        Event("order.paid", {"order_id": "1"}),
        Event("order.paid", {"order_id": "poison"}),
        Event("order.paid", {"order_id": "2"}),
    ])
    poison = ids[1]

    def handle(entry: Entry) -> None:
        if entry.fields["order_id"] == "poison":
            c.consumer.nack(entry)  # "processing failed", every time
        else:
            c.consumer.ack(entry)

    c = Collector(consumer(client, stream, "g", "w1", reclaim=NACK_ONLY, max_deliveries=2),
                  handle=handle)
    try:
        dead = wait_until("the poison entry in the dead-letter stream",
                          lambda: list(client.replay(f"{stream}:dlq")))
        got = c.received()
    finally:
        c.stop()
    assert [(e.id, e.delivery_count) for e in got if e.id == poison] == [(poison, 1), (poison, 2)]
    assert sorted(e.id for e in got if e.id != poison) == [ids[0], ids[2]]
    [letter] = dead
    assert letter.type == "order.paid"
    assert letter.fields == {
        "order_id": "poison",
        "dlq.stream": stream,
        "dlq.id": poison,
        "dlq.group": "g",
        "dlq.consumer": "w1",
        "dlq.deliveries": "2",
        "dlq.reason": "max_deliveries",
    }
    # Moved and acknowledged in one step: nothing left pending, nothing doubled.
    assert client.list_pending(stream, "g") == []
    assert [e.id for e in client.replay(stream)] == ids  # the source keeps it


def test_max_in_flight_caps_what_a_consumer_holds(client: Client, stream: str) -> None:
    cap = 3
    ids = client.produce_batch(stream, [Event("job", {"n": str(i)}) for i in range(10)])
    client.create_group(stream, "g", "0")  # so the first look at the PEL finds the group
    c = Collector(consumer(client, stream, "g", "w1", batch_size=10, max_in_flight=cap),
                  should_ack=lambda e: False)
    acked: list[str] = []

    def holds(n: int) -> bool:
        """Checks the cap on every look; true once ``n`` entries arrived."""
        pending = pending_of(client, stream, "g", "w1")
        assert len(pending) <= cap, f"PEL of w1 above max_in_flight: {pending}"
        received = c.ids()
        assert len(received) - len(acked) <= cap, "the client holds more than max_in_flight"
        return len(received) >= n

    try:
        wait_until(f"the first {cap} entries", lambda: holds(cap))
        assert c.ids() == ids[:cap]
        # Each ack makes room for exactly one more.
        for n in range(cap + 1, len(ids) + 1):
            next_id = c.ids()[len(acked)]
            assert client.ack(stream, "g", [next_id]) == 1
            acked.append(next_id)
            wait_until(f"entry {n} after an ack", lambda: holds(n))
        assert c.ids() == ids
        assert len(pending_of(client, stream, "g", "w1")) == cap
    finally:
        c.stop()
    assert client.ack(stream, "g", ids) == cap


def test_restart_at_max_in_flight_gets_its_pending_entries_again(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("job", {"n": str(i)}) for i in range(4)])
    crashed = Collector(consumer(client, stream, "g", "w1", max_in_flight=2), should_ack=lambda e: False)
    crashed.wait_for(2)
    crashed.stop()  # crashes holding max_in_flight entries
    assert pending_of(client, stream, "g", "w1") == ids[:2]
    restarted = Collector(Consumer(client, stream, "g", "w1", max_in_flight=2))  # pending_first
    try:
        got = restarted.wait_for(2, timeout=5)
    finally:
        restarted.stop()
    assert [(e.id, e.redelivered) for e in got[:2]] == [(ids[0], True), (ids[1], True)]


def test_heartbeats_are_consumed_silently(client: Client, stream: str) -> None:
    beats: list[Heartbeat] = []
    c = Collector(consumer(client, stream, "g", "w1", heartbeat_ms=50, on_heartbeat=beats.append))
    try:
        wait_until("two heartbeats", lambda: len(beats) >= 2)
        assert c.received() == []  # never yielded as entries
        assert c.consumer.last_heartbeat is not None and c.consumer.last_heartbeat.server_time_ms > 0
        id = client.produce(stream, "job")
        assert [e.id for e in c.wait_for(1)] == [id]
    finally:
        c.stop()


def test_idempotent_produce_returns_the_same_id(client: Client, stream: str) -> None:
    first = client.produce(stream, "order.paid", {"order_id": "1"}, idempotency_key="pay-1")
    again = client.produce(stream, "order.paid", {"order_id": "1"}, idempotency_key="pay-1")
    assert again == first
    with Producer(client) as producer:
        other = producer.produce(stream, "order.paid", {"order_id": "2"}, idempotency_key="pay-2")
        batch = producer.produce_batch(stream, [
            Event("order.paid", {"order_id": "2"}, idempotency_key="pay-2"),
            Event("order.paid", {"order_id": "3"}, idempotency_key="pay-3"),
            ("order.note", {"order_id": "3"}),  # no key: always written
        ])
    assert other != first
    assert batch[0] == other and batch[1] not in (first, other)
    assert [e.id for e in client.replay(stream)] == [first, other, batch[1], batch[2]]


def take(tail: Tail, n: int, timeout: float = 15) -> list[Entry]:
    """The first ``n`` entries of ``tail``; closing it after ``timeout``
    ends the iteration (and the test) instead of hanging."""
    guard = threading.Timer(timeout, tail.close)
    guard.start()
    got: list[Entry] = []
    try:
        for entry in tail:
            got.append(entry)
            if len(got) == n:
                break
    finally:
        guard.cancel()
    return got


def test_tail_yields_new_entries(client: Client, stream: str) -> None:
    old = client.produce(stream, "t", {"n": "old"})
    # tail() returns once the gateway has resolved `$`: everything produced
    # after it is seen, nothing before.
    with client.tail(stream) as tail:
        new = client.produce_batch(stream, [Event("t", {"n": str(i)}) for i in range(3)])
        got = take(tail, 3)
    assert [e.id for e in got] == new
    assert [e.fields["n"] for e in got] == ["0", "1", "2"]
    assert all(e.delivery_count == 0 and not e.redelivered for e in got)

    with client.tail(stream, "0", batch_size=2) as tail:
        assert [e.id for e in take(tail, 4)] == [old, *new]
    with client.tail(stream, old) as tail:
        assert [e.id for e in take(tail, 3)] == new
    # Tail does not join a group: nothing was created or left pending.
    assert client.describe_stream(stream).group_count == 0


def test_tail_heartbeats_and_errors(client: Client, stream: str) -> None:
    beats: list[Heartbeat] = []
    with client.tail(stream, heartbeat_ms=50, on_heartbeat=beats.append) as tail:
        got: list[Entry] = []
        reader = threading.Thread(target=lambda: got.extend(tail), daemon=True)
        reader.start()
        wait_until("two tail heartbeats", lambda: len(beats) >= 2)
        assert tail.last_heartbeat == beats[-1]
        tail.close()
        reader.join(timeout=15)
    assert not reader.is_alive() and got == []
    with pytest.raises(StreamgateError) as err:
        next(iter(client.tail(stream, "not-an-id")))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_trim_acked_by_all_groups(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("t", {"n": str(i)}) for i in range(6)], max_len=0)
    client.create_group(stream, "fast", "0")
    client.create_group(stream, "slow", ids[1])  # has "seen" the first two
    c = Collector(consumer(client, stream, "fast", "w1"), should_ack=lambda e: e.id in ids[:4])
    c.wait_for(6)
    c.stop()
    wait_until("fast acknowledged the first four",
               lambda: pending_of(client, stream, "fast", "w1") == ids[4:])
    # slow still needs ids[2:], fast needs ids[4:]: only the first two go.
    assert client.trim(stream, max_len=0, exact=True, acked_by_all_groups=True) == 2
    assert [e.id for e in client.replay(stream)] == ids[2:]
    client.delete_group(stream, "slow")
    # It bounds max_len too: keeping only ids[5] is asked for, but fast still
    # needs ids[4] (its oldest pending entry).
    assert client.trim(stream, max_len=1, exact=True, acked_by_all_groups=True) == 2
    assert [e.id for e in client.replay(stream)] == ids[4:]


def test_public_api_is_typed() -> None:
    import importlib.resources

    assert importlib.resources.files(streamgate).joinpath("py.typed").is_file()


# -- Producer.publish: batching over one ProduceStream -------------------------

def produce_streams(gateway: Gateway) -> float:
    """ProduceStream calls the gateway has set up so far."""
    return gateway.metric('streamgate_rpc_requests_total{rpc="ProduceStream",code="Ok"}')


def unary_produces(gateway: Gateway) -> float:
    return gateway.metric('streamgate_rpc_requests_total{rpc="Produce",code="Ok"}')


def id_key(id: str) -> tuple[int, ...]:
    return tuple(map(int, id.split("-")))


def test_publish_batches_events_over_one_stream(gateway: Gateway, client: Client, stream: str) -> None:
    streams_before, produces_before = produce_streams(gateway), unary_produces(gateway)
    # A linger far beyond the test: only max_events ships a batch.
    settings = streamgate.BatchSettings(max_events=10, linger_ms=600_000)
    with Producer(gateway.addr, batch_settings=settings) as producer:
        futures = [producer.publish(stream, "job", {"n": str(i)}) for i in range(25)]
        ids = [f.result(timeout=15) for f in futures[:20]]  # two full batches
        assert not any(f.done() for f in futures[20:]), "a partial batch went out before its linger"
        assert producer.publisher.requests_sent == 2
        assert producer.flush(timeout=15)
        ids += [f.result(timeout=0) for f in futures[20:]]
        assert producer.publisher.requests_sent == 3
        # More publishes later go over the same stream.
        later = producer.publish(stream, "job", {"n": "25"})
        assert producer.flush(timeout=15)
        ids.append(later.result(timeout=0))
        assert producer.publisher.streams_opened == 1
    assert len(set(ids)) == 26 and ids == sorted(ids, key=id_key)
    assert [(e.id, e.fields["n"]) for e in client.replay(stream)] == [(id, str(n)) for n, id in enumerate(ids)]
    assert produce_streams(gateway) - streams_before == 1
    assert unary_produces(gateway) == produces_before


def test_publish_linger_sends_a_partial_batch(gateway: Gateway, stream: str) -> None:
    settings = streamgate.BatchSettings(max_events=1000, linger_ms=50)
    with Producer(gateway.addr, batch_settings=settings) as producer:
        futures = [producer.publish(stream, "job", {"n": str(i)}) for i in range(3)]
        # No flush, no full batch: only the linger can send these.
        ids = [f.result(timeout=15) for f in futures]
        assert producer.publisher.requests_sent == 1
    assert ids == sorted(ids, key=id_key) and len(set(ids)) == 3


def test_publish_max_bytes_ships_a_batch(gateway: Gateway, stream: str) -> None:
    settings = streamgate.BatchSettings(max_events=1000, max_bytes=3000, linger_ms=600_000)
    with Producer(gateway.addr, batch_settings=settings) as producer:
        futures = [producer.publish(stream, "blob", {"data": "x" * 1000}) for _ in range(4)]
        # The third event would pass 3000 bytes: the first two went alone.
        futures[0].result(timeout=15)
        assert producer.publisher.requests_sent == 1
        assert not futures[2].done()
        assert producer.flush(timeout=15)
        assert producer.publisher.requests_sent == 2


def test_a_refused_batch_fails_only_its_own_publishes(gateway: Gateway, client: Client, stream: str) -> None:
    settings = streamgate.BatchSettings(linger_ms=600_000)
    bad_stream = f"{stream}-bad"
    with Producer(gateway.addr, batch_settings=settings) as producer:
        good = [producer.publish(stream, "ok", {"n": str(i)}) for i in range(3)]
        bad = [producer.publish(bad_stream, "ok", {"n": "0"}),
               producer.publish(bad_stream, "x", {"ts_ms": "1"})]  # reserved field
        assert producer.flush(timeout=15)
        later = producer.publish(stream, "ok", {"n": "3"})
        assert producer.flush(timeout=15)
        for future in bad:
            err = future.exception(timeout=0)
            assert isinstance(err, StreamgateError), err
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "ts_ms" in err.details
        ids = [f.result(timeout=0) for f in [*good, later]]
        assert producer.publisher.streams_opened == 1  # the stream went on
    assert [e.id for e in client.replay(stream)] == ids
    assert list(client.replay(bad_stream)) == []


def test_publish_passes_idempotency_keys(gateway: Gateway, client: Client, stream: str) -> None:
    with Producer(gateway.addr) as producer:
        first = producer.publish(stream, Event("pay", {"n": "1"}, idempotency_key="k1")).result(timeout=15)
        again = producer.publish(stream, "pay", {"n": "1"}, idempotency_key="k1").result(timeout=15)
    assert again == first
    assert [e.id for e in client.replay(stream)] == [first]


def test_partition_keys_are_stored_and_returned(gateway: Gateway, client: Client, stream: str) -> None:
    produced = client.produce(stream, "order.placed", {"n": "0"}, key="customer-1")
    with Producer(gateway.addr) as producer:
        published = [
            producer.publish(stream, "order.paid", {"n": "1"}, key="customer-2"),
            producer.publish(stream, Event("order.paid", {"n": "2"}, key="customer-1")),
            producer.publish(stream, "order.paid", {"n": "3"}),
        ]
        ids = [produced, *(f.result(timeout=15) for f in published)]
        keyed_again = producer.produce(stream, "order.shipped", {"n": "4"}, key="customer-3",
                                       idempotency_key="ship-4")
        assert producer.produce(stream, "order.shipped", {"n": "4"}, key="customer-3",
                                idempotency_key="ship-4") == keyed_again
    ids.append(keyed_again)
    expected = [(ids[0], "customer-1"), (ids[1], "customer-2"), (ids[2], "customer-1"),
                (ids[3], ""), (ids[4], "customer-3")]
    replayed = list(client.replay(stream))
    assert [(e.id, e.key) for e in replayed] == expected
    assert all(e.partition == 0 and "partition_key" not in e.fields for e in replayed)

    c = Collector(consumer(gateway.addr, stream, "g", "c1"))
    try:
        got = c.wait_for(5)
    finally:
        c.stop()
    assert [(e.id, e.key) for e in got] == expected

    with pytest.raises(StreamgateError) as err:
        client.produce(stream, "x", {"partition_key": "k"})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "partition_key" in err.value.details


def test_publish_resends_after_a_gateway_restart(redis_server: RedisServer, client: Client, stream: str) -> None:
    gw = Gateway(redis_server.url)
    addr = gw.addr
    producer = Producer(addr, batch_settings=streamgate.BatchSettings(linger_ms=0))
    try:
        first = producer.publish(stream, "e", {"n": "0"}, idempotency_key="e0").result(timeout=15)
        gw.terminate()  # ends the stream with UNAVAILABLE
        pending = [producer.publish(stream, "e", {"n": str(i)}, idempotency_key=f"e{i}")
                   for i in range(1, 4)]
        gw = Gateway(redis_server.url, listen=addr)
        ids = [first, *(f.result(timeout=30) for f in pending)]
        assert producer.publisher.streams_opened >= 2
    finally:
        producer.close()
        gw.terminate()
    assert [(e.id, e.fields["n"]) for e in client.replay(stream)] == [(id, str(n)) for n, id in enumerate(ids)]


# -- Consumer over Consume: in-band acks and lease extension -------------------

def unary_calls(gateway: Gateway, rpc: str) -> float:
    return gateway.metric(f'streamgate_rpc_requests_total{{rpc="{rpc}",code="Ok"}}')


def test_acks_go_in_band_in_batches(gateway: Gateway, client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("job", {"n": str(i)}) for i in range(15)])
    acks_before = unary_calls(gateway, "Ack")
    consumes_before = unary_calls(gateway, "Consume")
    # A long delay: only ack_batch_size (or close) sends acks.
    c = consumer(gateway.addr, stream, "g", "w1", batch_size=20, ack_batch_size=10,
                 ack_delay_ms=600_000)
    futures = []
    try:
        for entry in c:
            futures.append(c.ack(entry))
            if len(futures) == 10:
                # Ten acks make one message; its Confirm resolves all ten.
                assert [f.result(timeout=15) for f in futures] == [1] * 10
                assert pending_of(client, stream, "g", "w1") == ids[10:]
            if len(futures) == len(ids):
                # Five more acks, below the batch size, then IDs acked before:
                # all wait for close().
                assert not any(f.done() for f in futures[10:]), "acks sent before their batch was full"
                again = c.ack(ids[:2])
                break
    finally:
        c.close()
    assert [f.result(timeout=0) for f in futures] == [1] * len(ids)
    assert again.result(timeout=0) == 0  # not pending any more: confirmed as not_pending
    assert client.list_pending(stream, "g") == []
    assert unary_calls(gateway, "Ack") == acks_before  # all in band
    assert unary_calls(gateway, "Consume") - consumes_before == 1


def test_nack_and_extend_go_in_band(gateway: Gateway, client: Client, stream: str) -> None:
    first, second = client.produce_batch(stream, [Event("job"), Event("job")])
    before = unary_calls(gateway, "Nack") + unary_calls(gateway, "Extend")
    with consumer(gateway.addr, stream, "g", "w1", reclaim=NACK_ONLY) as c:
        seen: list[tuple[str, bool]] = []
        for entry in c:
            seen.append((entry.id, entry.redelivered))
            if entry.id == first and not entry.redelivered:
                assert c.extend(entry).result(timeout=15) == 1
                assert c.extend("0-1").result(timeout=15) == 0  # never delivered
                assert c.nack(entry).result(timeout=15) == 1
            else:
                assert c.ack(entry).result(timeout=15) == 1
            if len(seen) == 3:
                break
    assert seen == [(first, False), (second, False), (first, True)]
    assert unary_calls(gateway, "Nack") + unary_calls(gateway, "Extend") == before
    assert client.list_pending(stream, "g") == []


def test_a_slow_handler_keeps_its_lease(client: Client, stream: str) -> None:
    """A handler slower than the group's reclaim threshold (1 s): with lease
    extension the reclaiming peer never takes the entry; without it, it does."""
    threshold_ms = 1000
    for lease_ms, expect_taken in [(threshold_ms, False), (0, True)]:
        name = f"{stream}-{lease_ms}"
        [id] = client.produce_batch(name, [Event("slow")])
        release = threading.Event()
        handled: list[str] = []

        def handle(entry: Entry) -> None:
            release.wait(30)
            handled.append(entry.id)
            slow.consumer.ack(entry)

        slow = Collector(consumer(client, name, "g", "slow", lease_ms=lease_ms), handle=handle)
        slow.wait_for(1)
        started = time.monotonic()
        peer = Collector(consumer(client, name, "g", "peer", heartbeat_ms=50,
                                  reclaim=Reclaim(min_idle_ms=threshold_ms, interval_ms=100)))
        try:
            if expect_taken:
                assert [e.id for e in peer.wait_for(1)] == [id]
            else:
                # Three reclaim thresholds of work while the peer reclaims.
                wait_until("3 s of slow work", lambda: time.monotonic() - started > 3 * threshold_ms / 1000,
                           timeout=10)
                assert peer.received() == []
                assert slow.consumer.extensions_sent >= 3
            release.set()
            wait_until("the entry acknowledged", lambda: client.list_pending(name, "g") == [])
        finally:
            release.set()
            slow.stop()
            peer.stop()
        assert handled == [id]
        assert [e.id for e in slow.received()] == [id]
        if not expect_taken:
            assert peer.received() == []


# -- ordered consumption: one owner per partition, acks in order, process() ----

def partition_of(key: str, partitions: int) -> int:
    """The gateway's partition for ``key`` (docs/partitions.md: FNV-1a, 32 bits)."""
    h = 2166136261
    for b in key.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h % partitions


class Journal:
    """Every entry handed to the handlers of several ``process`` calls, in
    the order they were handed (a lock makes it one order across threads),
    with the name of the consumer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, Entry]] = []

    def record(self, name: str, entry: Entry) -> None:
        with self.lock:
            self.entries.append((name, entry))

    def snapshot(self) -> list[tuple[str, Entry]]:
        with self.lock:
            return list(self.entries)

    def first_processings(self) -> dict[str, list[int]]:
        """Per key, the sequence numbers of its entries in the order they
        were first handed to a handler."""
        firsts: dict[str, list[int]] = {}
        seen: set[str] = set()
        for _, entry in self.snapshot():
            if entry.id not in seen:
                seen.add(entry.id)
                firsts.setdefault(entry.key, []).append(int(entry.fields["seq"]))
        return firsts


class Processor:
    """Runs ``consumer.process(handler, concurrency=...)`` in a thread; the
    handler records each entry in ``journal``, then waits for ``gate`` (if
    given) and raises where ``fail`` says."""

    def __init__(self, consumer: Consumer, journal: Journal, concurrency: int = 2,
                 fail: Callable[[Entry], bool] = lambda e: False,
                 gate: Optional[threading.Event] = None) -> None:
        self.consumer = consumer
        self.journal = journal
        self.fail = fail
        self.gate = gate
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(concurrency,), daemon=True)
        self._thread.start()

    def _handle(self, entry: Entry) -> None:
        self.journal.record(self.consumer.consumer, entry)
        if self.gate is not None:
            assert self.gate.wait(30), "the gate stayed closed"
        if self.fail(entry):
            raise RuntimeError(f"failing {entry.id} on purpose")

    def _run(self, concurrency: int) -> None:
        try:
            self.consumer.process(self._handle, concurrency=concurrency)
        except BaseException as err:  # surfaced by check()/stop()
            self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"process() failed: {self.error!r}") from self.error

    def stop(self) -> None:
        self.consumer.close()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "process() did not return after close()"
        self.check()


def keyed_events(keys: list[str], per_key: int, start: int = 0) -> list[Event]:
    """``per_key`` events for each key, interleaved, each with its sequence
    number within its key (from ``start``) in ``seq``."""
    return [Event("step", {"seq": str(seq)}, key=key)
            for seq in range(start, start + per_key) for key in keys]


def owners(client: Client, stream: str, group: str) -> dict[str, int]:
    """How many partitions each consumer of ``group`` owns."""
    counts: dict[str, int] = {}
    for p in client.list_partitions(stream, group):
        if p.owner:
            counts[p.owner] = counts.get(p.owner, 0) + 1
    return counts


def ordered(addr: str | Client, stream: str, name: str, **kw: object) -> Consumer:
    return consumer(addr, stream, "g", name, ordered=True, **kw)


def test_ordered_requires_a_partitioned_stream(client: Client, stream: str) -> None:
    client.produce(stream, "t")
    with ordered(client, stream, "a") as c, pytest.raises(StreamgateError) as err:
        next(iter(c))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_ordered_consumers_share_partitions_and_keep_key_order(client: Client, stream: str) -> None:
    assert client.create_stream(stream, partitions=4) is True
    assert client.describe_stream(stream).partitions == 4
    client.create_group(stream, "g", "0")
    keys = [f"customer-{n}" for n in range(12)]
    per_key = 30
    # Half of the events before the consumers start, half once they share
    # the work. b joins while a's handlers are held up and a holds entries of
    # every partition, so two partitions change hands with entries pending:
    # b gets them again, and a still handles the ones it holds.
    client.produce_batch(stream, keyed_events(keys, per_key // 2))
    journal = Journal()
    gate = threading.Event()
    a = Processor(ordered(client, stream, "a"), journal, gate=gate)
    b: Optional[Processor] = None
    try:
        wait_until("a to hold entries of every partition", lambda: all(
            p.owner == "a" and p.pending > 0 for p in client.list_partitions(stream, "g")))
        b = Processor(ordered(client, stream, "b"), journal)
        def balanced() -> bool:
            a.check()
            assert b is not None
            b.check()
            return owners(client, stream, "g") == {"a": 2, "b": 2}

        wait_until("a and b to own two partitions each", balanced, timeout=30)
        gate.set()
        client.produce_batch(stream, keyed_events(keys, per_key - per_key // 2, start=per_key // 2))
        wait_until("every event processed",
                   lambda: sum(map(len, journal.first_processings().values())) == len(keys) * per_key,
                   timeout=30)
        wait_until("every entry acknowledged", lambda: client.list_pending(stream, "g") == [])
    finally:
        gate.set()
        a.stop()
        if b is not None:
            b.stop()
    assert journal.first_processings() == {key: list(range(per_key)) for key in keys}
    # b took over entries a had received: they came to b again.
    assert any(name == "b" and e.redelivered for name, e in journal.snapshot())


def test_a_failed_handler_replays_its_partition_in_order(client: Client, stream: str) -> None:
    client.create_stream(stream, partitions=4)
    client.create_group(stream, "g", "0")
    keys = [f"order-{n}" for n in range(8)]
    per_key = 12
    journal = Journal()
    failed: list[str] = []

    def fail(entry: Entry) -> bool:
        """Fails once, on the 6th entry of the first key."""
        if entry.key == keys[0] and entry.fields["seq"] == "5" and not failed:
            failed.append(entry.id)
            return True
        return False

    a = Processor(ordered(client, stream, "a"), journal, fail=fail)
    b = Processor(ordered(client, stream, "b"), journal, fail=fail)
    try:
        wait_until("a and b to own two partitions each",
                   lambda: owners(client, stream, "g") == {"a": 2, "b": 2}, timeout=30)
        ids = client.produce_batch(stream, keyed_events(keys, per_key))
        wait_until("every event processed",
                   lambda: sum(map(len, journal.first_processings().values())) == len(ids),
                   timeout=30)
        wait_until("every entry acknowledged", lambda: client.list_pending(stream, "g") == [])
    finally:
        a.stop()
        b.stop()
    [bad] = failed
    partition = int(bad.split("/")[0])
    # The partition's entries in stream order, and as its handler saw them:
    # up to the failed one, then from the failed one again, in order. An
    # entry after the failed one handled before its re-delivery (not
    # redelivered) is one the gateway read before it applied the Nack and
    # sent afterwards.
    in_stream = sorted((i for i in ids if i.startswith(f"{partition}/")), key=qualified_key)
    seen = [(e.id, e.redelivered) for _, e in journal.snapshot() if e.partition == partition]
    at = in_stream.index(bad)
    assert [id for id, _ in seen] == in_stream[:at + 1] + in_stream[at:], \
        f"failed {bad}; handled {seen}"
    assert seen[at + 1] == (bad, True)
    assert journal.first_processings() == {key: list(range(per_key)) for key in keys}


def qualified_key(id: str) -> tuple[int, ...]:
    """Sorts partition-qualified IDs ``p/ms-seq`` by partition, then ID."""
    partition, _, rest = id.partition("/")
    return (int(partition), *map(int, rest.split("-")))


def test_ordered_acks_wait_for_their_line_and_a_nack_cuts_it(client: Client, stream: str) -> None:
    """Rule 1: an ack waits until the entries received before it in its
    partition are acked. Rule 2: a nack drops the later entries of its
    partition (their acks are not sent); they come again after it."""
    client.create_stream(stream, partitions=4)
    other = next(k for k in (f"b{n}" for n in itertools.count())
                 if partition_of(k, 4) != partition_of("a", 4))
    ids = client.produce_batch(stream, [*(Event("t", {"seq": str(n)}, key="a") for n in range(5)),
                                        Event("t", key=other)])
    a_ids, b_id = ids[:5], ids[5]
    c = ordered(client, stream, "w1", ack_batch_size=1)
    guard = threading.Timer(30, c.close)  # a hang ends the iteration, and the test
    guard.start()
    try:
        it = iter(c)
        got = {e.id: e for e in itertools.islice(it, 6)}
        assert sorted(got) == sorted(ids)
        a = [got[id] for id in a_ids]

        held = c.ack(a[2])  # waits for a[0] and a[1]
        # Messages are confirmed in order: once a later ack is, an earlier
        # message would have been too.
        assert c.ack(got[b_id]).result(timeout=15) == 1
        assert not held.done()
        assert pending_of(client, stream, "g", "w1") == a_ids

        assert c.nack(a[1]).result(timeout=15) == 1
        assert held.result(timeout=15) == 0  # dropped: a[2] comes again
        assert c.ack(a[3]).result(timeout=15) == 0  # dropped too, not sent
        assert c.ack(a[0]).result(timeout=15) == 1
        assert pending_of(client, stream, "g", "w1") == a_ids[1:]

        again = list(itertools.islice(it, 4))
        assert [(e.id, e.redelivered) for e in again] == [(id, True) for id in a_ids[1:]]
        acks = [c.ack(e) for e in reversed(again)]  # backwards: all wait for again[0]
        assert [f.result(timeout=15) for f in acks] == [1, 1, 1, 1]
        assert client.list_pending(stream, "g") == []
    finally:
        guard.cancel()
        c.close()


class ScriptedGateway:
    """A stand-in for the gateway's Consume that plays a script, so a test
    fixes the order of every message on the call: ``script`` reads the
    client's messages with ``next(requests)``, checks them, and yields the
    responses. A failed check ends the call with FAILED_PRECONDITION (which
    the iteration raises); once the script is done, any further message is
    a failure too, reported by ``check``."""

    Script = Callable[[Iterator[es.ConsumeRequest]], Iterator[es.ConsumeResponse]]

    def __init__(self, script: Script) -> None:
        self.failure: Optional[str] = None
        self._script = script
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "streamgate.v1.EventStream",
            {"Consume": grpc.stream_stream_rpc_method_handler(
                self._consume,
                request_deserializer=es.ConsumeRequest.FromString,
                response_serializer=es.ConsumeResponse.SerializeToString)})])
        self.addr = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def _consume(self, requests: Iterator[es.ConsumeRequest],
                 context: grpc.ServicerContext) -> Iterator[es.ConsumeResponse]:
        try:
            yield from self._script(requests)
            for request in requests:  # until the client half-closes
                raise AssertionError(f"unexpected message after the script: {request}")
        except Exception as err:
            self.failure = f"script: {err!r}"
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.failure)

    def check(self) -> None:
        assert self.failure is None, self.failure

    def stop(self) -> None:
        self._server.stop(grace=None)


def scripted_batch(*ids: str, redelivered: bool = False) -> es.ConsumeResponse:
    """A batch of entries ``p/ms-seq`` as the gateway sends it."""
    return es.ConsumeResponse(batch=entry_pb2.Batch(entries=[
        entry_pb2.Entry(id=id, type="t", partition=int(id.split("/")[0]),
                        delivery_count=2 if redelivered else 1, redelivered=redelivered)
        for id in ids]))


def scripted_confirm(op: es.ConfirmOp, done: Iterable[str] = (),
                     not_pending: Iterable[str] = ()) -> es.ConsumeResponse:
    return es.ConsumeResponse(confirm=es.Confirm(op=op, done=list(done),
                                                 not_pending=list(not_pending)))


def test_a_nack_holds_its_partition_until_its_confirm() -> None:
    """Rule 3, message by message against a scripted gateway: the entries of
    a nacked entry's partition that arrive before the nack's Confirm wait
    for it (the gateway sends everything it read before the nack ahead of
    the Confirm, docs/ordered.md). When the nacked entry is done, those from
    it on are dropped (they come again, after the Confirm); when it is not,
    they are all handed out. Other partitions flow on meanwhile."""
    a, b, c, e = "1/5-0", "1/5-1", "1/5-2", "1/5-3"  # partition 1
    d, f = "2/5-0", "2/5-1"  # partition 2
    nack_op, ack_op = es.CONFIRM_OP_NACK, es.CONFIRM_OP_ACK

    def script(requests: Iterator[es.ConsumeRequest]) -> Iterator[es.ConsumeResponse]:
        assert next(requests).open.ordered
        yield scripted_batch(a, b)
        assert list(next(requests).nack.ids) == [b]
        yield scripted_batch(c, d)  # read before the nack took effect
        assert list(next(requests).ack.ids) == [d]  # d handed out; c waits
        yield scripted_confirm(nack_op, done=[b])  # partition 1 starts again at b
        yield scripted_confirm(ack_op, done=[d])
        yield scripted_batch(b, c, redelivered=True)
        assert list(next(requests).nack.ids) == [c]
        yield scripted_batch(e, f)
        assert list(next(requests).ack.ids) == [f]  # f handed out; e waits
        yield scripted_confirm(nack_op, not_pending=[c])  # not done: nothing comes again
        yield scripted_confirm(ack_op, done=[f])

    gateway = ScriptedGateway(script)
    consumer = Consumer(gateway.addr, "s", "g", "w1", ordered=True, ack_batch_size=1, lease_ms=0)
    guard = threading.Timer(30, consumer.close)  # a hang ends the iteration, and the test
    guard.start()
    try:
        it = iter(consumer)
        first = [next(it), next(it)]
        assert [x.id for x in first] == [a, b]
        nacked = consumer.nack(first[1])
        got = next(it)
        assert (got.id, got.redelivered) == (d, False)  # not c: it waits for the Confirm
        assert consumer.ack(got).result(timeout=15) == 1
        assert nacked.result(timeout=15) == 1
        again = [next(it), next(it)]  # c was dropped: b and c come again, in order
        assert [(x.id, x.redelivered) for x in again] == [(b, True), (c, True)]
        nacked = consumer.nack(again[1])
        got = next(it)
        assert (got.id, got.redelivered) == (f, False)  # not e: it waits for the Confirm
        assert consumer.ack(got).result(timeout=15) == 1
        assert nacked.result(timeout=15) == 0
        got = next(it)
        assert (got.id, got.redelivered) == (e, False)  # released: c was not done
    finally:
        guard.cancel()
        consumer.close()
        gateway.stop()
    gateway.check()


def test_process_unordered_handles_every_entry(client: Client, stream: str) -> None:
    ids = client.produce_batch(stream, [Event("job", {"seq": str(n)}) for n in range(20)])
    journal = Journal()
    p = Processor(consumer(client, stream, "g", "w1", reclaim=NACK_ONLY), journal, concurrency=4,
                  fail=lambda e: e.id == ids[3] and not e.redelivered)
    try:
        wait_until("every entry processed, the failed one twice",
                   lambda: len(journal.snapshot()) >= len(ids) + 1)
        wait_until("every entry acknowledged", lambda: client.list_pending(stream, "g") == [])
    finally:
        p.stop()
    seen = [e.id for _, e in journal.snapshot()]
    assert sorted(seen) == sorted([*ids, ids[3]])
