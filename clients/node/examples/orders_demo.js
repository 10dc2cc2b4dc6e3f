#!/usr/bin/env node
// The streamgate reference scenario, with the Node client.
//
// Order events go to the stream `orders` (a retried produce with the same
// idempotency key writes nothing twice). Two consumer groups read it
// independently: `notifications` (workers `worker-a` and `worker-b`) and
// `analytics` (`worker-c`). worker-b reads its entries and "crashes" before
// acknowledging them. worker-a subscribes with `reclaim`: once the entries
// have been idle long enough they come to it again (delivery count 2,
// `redelivered`); it extends one during long work, nacks one that fails
// (back with delivery count 3) and acknowledges the rest. Then history is
// replayed and the stream trimmed safely, with the state of stream, groups
// and consumers shown along the way.
//
// Every step checks what it shows and the demo exits non-zero if something
// did not happen. It is safe to re-run: it recreates its two groups and only
// looks at the entries it produced itself.
//
// Environment: STREAMGATE_ADDR (default 127.0.0.1:50051), STREAMGATE_STREAM
// (default `orders`).

import { randomUUID } from 'node:crypto';

import { Client, Consumer, Producer, StreamgateError, status } from '../src/index.js';

const ADDR = process.env.STREAMGATE_ADDR ?? '127.0.0.1:50051';
const STREAM = process.env.STREAMGATE_STREAM ?? 'orders';
const IDLE_MS = 500; // how long an entry must be pending before it counts as abandoned
const RECLAIM = { minIdleMs: IDLE_MS, intervalMs: 100 };
const TIMEOUT_MS = 15_000; // how long any one step may take

class DemoFailed extends Error {}

/** Prints a confirmed fact, or stops the demo when it did not happen. */
function check(ok, what) {
  if (!ok) throw new DemoFailed(what);
  console.log(`  ok: ${what}`);
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/**
 * `worker` of `group` reads `count` entries, acknowledging each after
 * "processing" it when `ack`; gives up after TIMEOUT_MS.
 */
async function read(client, group, worker, count, { ack }) {
  const received = [];
  const consumer = new Consumer(client, STREAM, group, worker, { batchSize: 10 });
  const timer = setTimeout(() => consumer.close(), TIMEOUT_MS);
  try {
    for await (const entry of consumer) {
      received.push(entry);
      const action = ack && (await consumer.ack(entry)) === 1 ? 'acked' : 'NOT acked';
      console.log(`  ${group}/${worker} got ${entry.id} ${entry.type} ${JSON.stringify(entry.fields)} delivery ${entry.deliveryCount}: ${action}`);
      if (received.length === count) break;
    }
  } finally {
    clearTimeout(timer);
    consumer.close();
  }
  return received;
}

/**
 * worker-a with `reclaim`: takes over worker-b's idle entries, extends the
 * shipment during its "long" work, nacks the cancellation once (the refund
 * service is "down") and acknowledges everything else. Resolves to what it
 * received, in order; gives up after TIMEOUT_MS.
 */
async function recover(client, ids) {
  const received = [];
  const done = new Set();
  const worker = new Consumer(client, STREAM, 'notifications', 'worker-a', { reclaim: RECLAIM });
  const timer = setTimeout(() => worker.close(), TIMEOUT_MS);
  try {
    for await (const entry of worker) {
      received.push(entry);
      console.log(`  notifications/worker-a got ${entry.id} ${entry.type} delivery ${entry.deliveryCount}${entry.redelivered ? ' (redelivered)' : ''}`);
      if (entry.id === ids[4] && entry.deliveryCount === 2) {
        console.log(`    refund service down: nacked for re-delivery (${await worker.nack(entry)})`);
        continue;
      }
      if (entry.id === ids[3]) console.log(`    long work: extended (${await worker.extend(entry)}) so nobody reclaims it`);
      console.log((await worker.ack(entry)) === 1 ? '    acked' : '    NOT acked');
      done.add(entry.id);
      if (done.size === ids.length) break;
    }
  } finally {
    clearTimeout(timer);
    worker.close();
  }
  return received;
}

/** Stream length, groups with pending and lag, consumers with pending and idle. */
async function showState(client) {
  const info = await client.describeStream(STREAM);
  console.log(`  stream ${STREAM}: length ${info.length}, first ${info.firstEntryId || '-'}, last ${info.lastEntryId || '-'}`);
  for (const g of await client.listGroups(STREAM)) {
    console.log(`  group ${g.name}: pending ${g.pending}, lag ${g.lag ?? 'unknown'}, consumers ${g.consumers}`);
    for (const c of await client.listConsumers(STREAM, g.name)) {
      console.log(`    consumer ${c.name}: pending ${c.pending}, idle ${c.idleMs} ms`);
    }
  }
}

async function main() {
  const client = new Client(ADDR, { timeoutMs: TIMEOUT_MS });
  console.log(`== streamgate at ${ADDR}, stream '${STREAM}'`);

  console.log("== reset: recreate the demo's consumer groups");
  for (const group of ['notifications', 'analytics']) {
    try {
      await client.deleteGroup(STREAM, group);
    } catch (err) {
      if (err.code !== status.NOT_FOUND) throw err; // NOT_FOUND: no stream yet
    }
    // `$`: the groups see only what this run produces.
    check(await client.createGroup(STREAM, group, '$'), `group ${group} created`);
  }

  console.log('== produce order events');
  const events = [
    { type: 'order.placed', fields: { order_id: '1001', customer: 'ada', total: '42.00' } },
    { type: 'order.paid', fields: { order_id: '1001', method: 'card' } },
    { type: 'order.placed', fields: { order_id: '1002', customer: 'grace', total: '17.50' } },
    { type: 'order.shipped', fields: { order_id: '1001', carrier: 'dhl' } },
    { type: 'order.cancelled', fields: { order_id: '1002', reason: 'customer request' } },
  ];
  // The payment carries an idempotency key (unique per run here), so that a
  // producer that retries after a timeout cannot record it twice.
  const payKey = `pay-1001-${randomUUID().slice(0, 8)}`;
  const producer = new Producer(client);
  const ids = await producer.produceBatch(STREAM, events.map((e) => ({ ...e, idempotencyKey: e.type === 'order.paid' ? payKey : '' })));
  ids.forEach((id, i) => console.log(`  ${id} ${events[i].type} ${JSON.stringify(events[i].fields)}`));
  check(new Set(ids).size === events.length, `${events.length} events produced`);
  const retried = await producer.produce(STREAM, 'order.paid', events[1].fields, { idempotencyKey: payKey });
  check(retried === ids[1], `retried payment (same idempotency key) returned ${retried} again`);
  check((await client.describeStream(STREAM)).lastEntryId === ids[4], 'and wrote nothing');
  const types = events.map((e) => e.type);

  console.log('== analytics/worker-c reads and acknowledges everything');
  let got = await read(client, 'analytics', 'worker-c', ids.length, { ack: true });
  check(same(got.map((e) => e.id), ids) && same(got.map((e) => e.type), types), 'worker-c received every event, in order');

  console.log('== notifications/worker-b reads, then crashes before acknowledging');
  got = await read(client, 'notifications', 'worker-b', ids.length, { ack: false });
  check(same(got.map((e) => e.id), ids), 'worker-b received every event');
  check(got.every((e) => e.deliveryCount === 1), 'first delivery: delivery count 1');

  console.log("== state: worker-b's entries are pending");
  await showState(client);
  const groups = Object.fromEntries((await client.listGroups(STREAM)).map((g) => [g.name, g]));
  check(groups.notifications.pending === ids.length, `notifications has ${ids.length} pending`);
  check(groups.analytics.pending === 0, 'analytics has nothing pending');
  check(groups.notifications.lag === 0 && groups.analytics.lag === 0, 'both groups have read the whole stream (lag 0)');
  const pending = await client.listPending(STREAM, 'notifications');
  for (const p of pending) {
    console.log(`  pending ${p.id}: consumer ${p.consumer}, idle ${p.idleMs} ms, delivered ${p.deliveryCount}x`);
  }
  check(same(pending.map((p) => [p.id, p.consumer]), ids.map((id) => [id, 'worker-b'])), 'all pending entries belong to worker-b');

  console.log(`== notifications/worker-a subscribes with reclaim: entries idle for ${IDLE_MS} ms come to it`);
  const recovered = await recover(client, ids);
  const reclaimed = recovered.slice(0, ids.length);
  check(same(reclaimed.map((e) => e.id).sort(), [...ids].sort()), "worker-a reclaimed all of worker-b's entries");
  check(reclaimed.every((e) => e.deliveryCount === 2 && e.redelivered), 'delivery count 2 and redelivered after the reclaim');
  check(same(recovered.slice(ids.length).map((e) => [e.id, e.deliveryCount]), [[ids[4], 3]]), 'the nacked entry came back with delivery count 3');
  check((await client.listPending(STREAM, 'notifications')).length === 0, 'nothing pending in notifications');

  console.log('== remove the crashed worker-b (nothing of it is pending any more)');
  const removed = await client.removeConsumer(STREAM, 'notifications', 'worker-b');
  check(removed.removed && removed.handedOver === 0, 'worker-b removed');

  console.log("== replay this run's events");
  const history = [];
  for await (const e of client.replay(STREAM, { start: ids[0], end: ids.at(-1) })) {
    history.push(e);
    console.log(`  ${e.id} ${e.type} ${JSON.stringify(e.fields)}`);
  }
  check(same(history.map((e) => e.id), ids) && same(history.map((e) => e.type), types), 'replay returns every event in order');
  const newest = [];
  for await (const e of client.replay(STREAM, { start: ids[0], end: ids.at(-1), reverse: true, limit: 2 })) newest.push(e.id);
  check(same(newest, [ids[4], ids[3]]), 'reverse replay with limit 2 returns the newest two');

  console.log(`== safe trim: drop entries older than ${ids[3]} that every group has acknowledged`);
  const trimmed = await client.trim(STREAM, { minId: ids[3], exact: true, ackedByAllGroups: true });
  const info = await client.describeStream(STREAM);
  check(trimmed >= 3, `trimmed ${trimmed} entries`);
  check(info.firstEntryId === ids[3] && info.lastEntryId === ids[4], 'the stream now starts at the shipped event');

  console.log('== final state');
  await showState(client);
  const consumers = Object.fromEntries((await client.listConsumers(STREAM, 'notifications')).map((c) => [c.name, c]));
  check(consumers['worker-a']?.pending === 0, 'worker-a has nothing pending');
  client.close();
  console.log('== done');
}

main().catch((err) => {
  const why = err instanceof DemoFailed ? err.message : err instanceof StreamgateError ? `gateway call failed: ${err.message}` : err.stack;
  console.error(`FAILED: ${why}`);
  process.exit(1);
});
