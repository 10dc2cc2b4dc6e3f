#!/usr/bin/env python3
"""The streamgate reference scenario, with the Python client.

Order events go to the stream ``orders``. Two consumer groups read it
independently: ``notifications`` (workers ``worker-a`` and ``worker-b``) and
``analytics`` (``worker-c``). worker-b reads its entries and "crashes"
before acknowledging them; once they have been idle long enough, worker-a
reaps them (delivery count 2) and finishes the work. Then history is
replayed and the stream trimmed, with the state of stream, groups and
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
import time

import grpc

from streamgate import Client, Consumer, Entry, Event, Producer, StreamgateError

ADDR = os.environ.get("STREAMGATE_ADDR", "127.0.0.1:50051")
STREAM = os.environ.get("STREAMGATE_STREAM", "orders")
IDLE_MS = 500  # how long an entry must be pending before it counts as abandoned
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
                action = "acked" if ack and consumer.ack(entry) == 1 else "NOT acked"
                print(f"  {group}/{worker} got {entry.id} {entry.type} "
                      f"{dict(entry.fields)} delivery {entry.delivery_count}: {action}")
                if len(received) == count:
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
    with Producer(client) as producer:
        ids = producer.produce_batch(STREAM, events)
    for id, (type, fields) in zip(ids, events):
        print(f"  {id} {type} {fields}")
    check(len(set(ids)) == len(events), f"{len(events)} events produced")
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

    print(f"== notifications/worker-a reaps entries idle for {IDLE_MS} ms")
    claimed: dict[str, Entry] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(claimed) < len(ids) and time.monotonic() < deadline:
        claimed.update((e.id, e) for e in client.reap(STREAM, "notifications", "worker-a", IDLE_MS).claimed)
        if len(claimed) < len(ids):
            time.sleep(0.1)  # poll interval; the deadline bounds the wait
    for e in sorted(claimed.values(), key=lambda e: ids.index(e.id)):
        print(f"  worker-a claimed {e.id} {e.type} delivery count {e.delivery_count}")
    check(sorted(claimed) == sorted(ids), "worker-a claimed all of worker-b's entries")
    check(all(e.delivery_count == 2 for e in claimed.values()), "delivery count 2 after the reap")
    acked = client.ack(STREAM, "notifications", ids)
    check(acked == len(ids), f"worker-a processed and acknowledged {acked}")
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

    print(f"== trim: drop entries older than {ids[3]}")
    trimmed = client.trim(STREAM, min_id=ids[3], exact=True)
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
