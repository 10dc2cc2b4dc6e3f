#!/usr/bin/env python3
"""The streamgate reference scenario, with the Python client.

Order events go to the stream ``orders`` (a retried produce with the same
idempotency key writes nothing twice). Two consumer groups read it
independently: ``notifications`` (workers ``worker-a`` and ``worker-b``) and
``analytics`` (``worker-c``). worker-b reads its entries and "crashes"
before acknowledging them. worker-a subscribes with ``reclaim``: once the
entries have been idle long enough they come to it again (delivery count 2,
``redelivered``); it extends one during long work, nacks one that fails
(back with delivery count 3) and acknowledges the rest. Then history is
replayed and the stream trimmed safely, with the state of stream, groups and
consumers shown along the way.

Every step checks what it shows and the demo exits non-zero if something
did not happen. It is safe to re-run: it recreates its two groups and only
looks at the entries it produced itself.

Environment: STREAMGATE_ADDR (default 127.0.0.1:50051), STREAMGATE_STREAM
(default ``orders``).
"""

from __future__ import annotations

import os
import sys
import threading
import uuid

import grpc

from streamgate import Client, Consumer, Entry, Event, Producer, Reclaim, StreamgateError

ADDR = os.environ.get("STREAMGATE_ADDR", "127.0.0.1:50051")
STREAM = os.environ.get("STREAMGATE_STREAM", "orders")
IDLE_MS = 500  # how long an entry must be pending before it counts as abandoned
RECLAIM = Reclaim(min_idle_ms=IDLE_MS, interval_ms=100)
TIMEOUT_S = 15  # how long any one step may take


class DemoFailed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    """Prints a confirmed fact, or stops the demo when it did not happen."""
    if not ok:
        raise DemoFailed(what)
    print(f"  ok: {what}")


def read(client: Client, group: str, worker: str, count: int, *, ack: bool) -> list[Entry]:
    """``worker`` of ``group`` reads ``count`` entries, acknowledging each
    after "processing" it when ``ack``; gives up after TIMEOUT_S."""
    received: list[Entry] = []
    with Consumer(client, STREAM, group, worker, batch_size=10) as consumer:
        timer = threading.Timer(TIMEOUT_S, consumer.close)
        timer.start()
        try:
            for entry in consumer:
                received.append(entry)
                action = "acked" if ack and consumer.ack(entry).result(timeout=15) == 1 else "NOT acked"
                print(f"  {group}/{worker} got {entry.id} {entry.type} "
                      f"{dict(entry.fields)} delivery {entry.delivery_count}: {action}")
                if len(received) == count:
                    break
        finally:
            timer.cancel()
    return received


def recover(client: Client, ids: list[str]) -> list[Entry]:
    """worker-a with ``reclaim``: takes over worker-b's idle entries, extends
    the shipment during its "long" work, nacks the cancellation once (the
    refund service is "down") and acknowledges everything else. Returns what
    it received, in order; gives up after TIMEOUT_S."""
    received: list[Entry] = []
    done: set[str] = set()
    with Consumer(client, STREAM, "notifications", "worker-a", reclaim=RECLAIM) as worker:
        timer = threading.Timer(TIMEOUT_S, worker.close)
        timer.start()
        try:
            for entry in worker:
                received.append(entry)
                print(f"  notifications/worker-a got {entry.id} {entry.type} delivery "
                      f"{entry.delivery_count}{' (redelivered)' if entry.redelivered else ''}")
                if entry.id == ids[4] and entry.delivery_count == 2:
                    print(f"    refund service down: nacked for re-delivery ({worker.nack(entry).result(timeout=15)})")
                    continue
                if entry.id == ids[3]:
                    print(f"    long work: extended ({worker.extend(entry).result(timeout=15)}) so nobody reclaims it")
                print("    acked" if worker.ack(entry).result(timeout=15) == 1 else "    NOT acked")
                done.add(entry.id)
                if done == set(ids):
                    break
        finally:
            timer.cancel()
    return received


def show_state(client: Client) -> None:
    """Stream length, groups with pending and lag, consumers with pending and idle."""
    info = client.describe_stream(STREAM)
    print(f"  stream {STREAM}: length {info.length}, first {info.first_entry_id or '-'}, "
          f"last {info.last_entry_id or '-'}")
    for g in client.list_groups(STREAM):
        lag = "unknown" if g.lag is None else g.lag
        print(f"  group {g.name}: pending {g.pending}, lag {lag}, consumers {g.consumers}")
        for c in client.list_consumers(STREAM, g.name):
            print(f"    consumer {c.name}: pending {c.pending}, idle {c.idle_ms} ms")


def main() -> None:
    client = Client(ADDR, timeout=TIMEOUT_S)
    print(f"== streamgate at {ADDR}, stream {STREAM!r}")

    print("== reset: recreate the demo's consumer groups")
    for group in ("notifications", "analytics"):
        try:
            client.delete_group(STREAM, group)
        except StreamgateError as err:
            if err.code != grpc.StatusCode.NOT_FOUND:  # no stream yet
                raise
        # `$`: the groups see only what this run produces.
        check(client.create_group(STREAM, group, "$"), f"group {group} created")

    print("== produce order events")
    events = [
        ("order.placed", {"order_id": "1001", "customer": "ada", "total": "42.00"}),
        ("order.paid", {"order_id": "1001", "method": "card"}),
        ("order.placed", {"order_id": "1002", "customer": "grace", "total": "17.50"}),
        ("order.shipped", {"order_id": "1001", "carrier": "dhl"}),
        ("order.cancelled", {"order_id": "1002", "reason": "customer request"}),
    ]
    # The payment carries an idempotency key (unique per run here), so that
    # a producer that retries after a timeout cannot record it twice.
    run = uuid.uuid4().hex[:8]
    batch = [Event(t, f, idempotency_key=f"pay-1001-{run}" if t == "order.paid" else "")
             for t, f in events]
    with Producer(client) as producer:
        ids = producer.produce_batch(STREAM, batch)
        for id, (type, fields) in zip(ids, events):
            print(f"  {id} {type} {fields}")
        check(len(set(ids)) == len(events), f"{len(events)} events produced")
        retried = producer.produce(STREAM, "order.paid", events[1][1],
                                   idempotency_key=f"pay-1001-{run}")
    check(retried == ids[1], f"retried payment (same idempotency key) returned {retried} again")
    check(client.describe_stream(STREAM).last_entry_id == ids[-1], "and wrote nothing")
    types = [t for t, _ in events]

    print("== analytics/worker-c reads and acknowledges everything")
    got = read(client, "analytics", "worker-c", len(ids), ack=True)
    check([e.id for e in got] == ids and [e.type for e in got] == types,
          "worker-c received every event, in order")

    print("== notifications/worker-b reads, then crashes before acknowledging")
    got = read(client, "notifications", "worker-b", len(ids), ack=False)
    check([e.id for e in got] == ids, "worker-b received every event")
    check(all(e.delivery_count == 1 for e in got), "first delivery: delivery count 1")

    print("== state: worker-b's entries are pending")
    show_state(client)
    groups = {g.name: g for g in client.list_groups(STREAM)}
    check(groups["notifications"].pending == len(ids), f"notifications has {len(ids)} pending")
    check(groups["analytics"].pending == 0, "analytics has nothing pending")
    check(groups["notifications"].lag == 0 and groups["analytics"].lag == 0,
          "both groups have read the whole stream (lag 0)")
    pending = client.list_pending(STREAM, "notifications")
    for p in pending:
        print(f"  pending {p.id}: consumer {p.consumer}, idle {p.idle_ms} ms, "
              f"delivered {p.delivery_count}x")
    check([(p.id, p.consumer) for p in pending] == [(i, "worker-b") for i in ids],
          "all pending entries belong to worker-b")

    print(f"== notifications/worker-a subscribes with reclaim: entries idle for {IDLE_MS} ms come to it")
    got = recover(client, ids)
    reclaimed = got[:len(ids)]
    check(sorted(e.id for e in reclaimed) == sorted(ids), "worker-a reclaimed all of worker-b's entries")
    check(all(e.delivery_count == 2 and e.redelivered for e in reclaimed),
          "delivery count 2 and redelivered after the reclaim")
    check([(e.id, e.delivery_count) for e in got[len(ids):]] == [(ids[4], 3)],
          "the nacked entry came back with delivery count 3")
    check(client.list_pending(STREAM, "notifications") == [], "nothing pending in notifications")

    print("== remove the crashed worker-b (nothing of it is pending any more)")
    removed = client.remove_consumer(STREAM, "notifications", "worker-b")
    check(removed.removed and removed.handed_over == 0, "worker-b removed")

    print("== replay this run's events")
    history = list(client.replay(STREAM, ids[0], ids[-1]))
    for e in history:
        print(f"  {e.id} {e.type} {dict(e.fields)}")
    check([e.id for e in history] == ids and [e.type for e in history] == types,
          "replay returns every event in order")
    newest = [e.id for e in client.replay(STREAM, ids[0], ids[-1], reverse=True, limit=2)]
    check(newest == [ids[-1], ids[-2]], "reverse replay with limit 2 returns the newest two")

    print(f"== safe trim: drop entries older than {ids[3]} that every group has acknowledged")
    trimmed = client.trim(STREAM, min_id=ids[3], exact=True, acked_by_all_groups=True)
    info = client.describe_stream(STREAM)
    check(trimmed >= 3, f"trimmed {trimmed} entries")
    check((info.first_entry_id, info.last_entry_id) == (ids[3], ids[4]),
          "the stream now starts at the shipped event")

    print("== final state")
    show_state(client)
    consumers = {c.name: c for c in client.list_consumers(STREAM, "notifications")}
    check(consumers["worker-a"].pending == 0, "worker-a has nothing pending")
    client.close()
    print("== done")


if __name__ == "__main__":
    try:
        main()
    except DemoFailed as failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        sys.exit(1)
    except StreamgateError as err:
        print(f"FAILED: gateway call failed: {err}", file=sys.stderr)
        sys.exit(1)
