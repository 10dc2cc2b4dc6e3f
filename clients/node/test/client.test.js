// End-to-end tests of the Node client against the real gateway and Redis.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { Client, Consumer, Producer, StreamgateError, status } from '../src/index.js';
import { loadServices } from '../src/proto.js';
import { Gateway, RedisServer, uniqueStream, waitUntil } from './harness.js';

/** @type {RedisServer} */ let redis;
/** @type {Gateway} */ let gateway;
/** @type {Client} */ let client;

before(async () => {
  redis = await RedisServer.start();
  gateway = await Gateway.start(redis.url);
  client = new Client(gateway.addr, { timeoutMs: 10_000 });
});

after(async () => {
  client?.close();
  await gateway?.terminate();
  redis?.stop();
});

/**
 * Iterates a Consumer in the background, recording every entry and
 * acknowledging those `shouldAck` accepts (default: all). `handle`, if
 * given, replaces the acknowledgement: it decides per entry (ack, nack,
 * keep).
 */
class Collector {
  /**
   * @param {Consumer} consumer @param {(e: any) => boolean} [shouldAck]
   * @param {(e: any) => Promise<unknown>} [handle]
   */
  constructor(consumer, shouldAck = () => true, handle = undefined) {
    this.consumer = consumer;
    /** @type {any[]} */ this.entries = [];
    /** @type {unknown} */ this.error = undefined;
    // The handling of the current entry: stop() closes the consumer (and
    // its channel) only once it settled, never under an ack in flight.
    /** @type {Promise<unknown> | undefined} */ this.handling = undefined;
    this.stopped = false;
    this.done = (async () => {
      try {
        for await (const entry of consumer) {
          if (this.stopped) return; // arrived as stop() closed the consumer
          this.entries.push(entry);
          if (handle) this.handling = handle(entry);
          else if (shouldAck(entry)) this.handling = consumer.ack(entry);
          await this.handling;
          this.handling = undefined;
        }
      } catch (err) {
        this.error = err;
      }
    })();
  }

  ids() {
    if (this.error) throw this.error;
    return this.entries.map((e) => e.id);
  }

  /** Waits until at least `n` entries arrived; resolves to them all. @param {number} n @param {number} [timeoutMs] */
  waitFor(n, timeoutMs) {
    return waitUntil(`${n} entries for ${this.consumer.consumer}`, () => this.ids().length >= n && this.entries, timeoutMs);
  }

  async stop() {
    this.stopped = true;
    await Promise.allSettled([this.handling]); // a failure is recorded by the loop
    this.consumer.close();
    await this.done;
  }
}

/** @param {string | Client} addr @param {string} stream @param {string} group @param {string} name @param {object} [options] */
function consumer(addr, stream, group, name, options = {}) {
  return new Consumer(addr, stream, group, name, { createGroup: true, groupStartId: '0', ...options });
}

test('produce, subscribe and ack', async () => {
  const stream = uniqueStream('basic');
  const producer = new Producer(gateway.addr);
  const first = await producer.produce(stream, 'order.placed', { order_id: '1001', total: '9.90' });
  const rest = await producer.produceBatch(stream, [
    { type: 'order.paid', fields: { order_id: '1001' } },
    { type: 'order.shipped', fields: { order_id: '1001' }, binaryFields: { label: Buffer.from([0xff, 0, 0x70]) } },
  ]);
  producer.close();
  const ids = [first, ...rest];

  const c = new Collector(consumer(gateway.addr, stream, 'g', 'c1'), () => false);
  const got = await c.waitFor(3).finally(() => c.stop());
  assert.deepEqual(got.map((e) => e.id), ids);
  assert.deepEqual(got.map((e) => e.type), ['order.placed', 'order.paid', 'order.shipped']);
  assert.deepEqual(got[0].fields, { order_id: '1001', total: '9.90' });
  assert.deepEqual([...got[2].binaryFields.label], [0xff, 0, 0x70]);
  assert.ok(got.every((e) => e.deliveryCount === 1 && e.tsMs > 0));

  assert.deepEqual((await client.listPending(stream, 'g')).map((p) => p.id), ids);
  assert.equal(await client.ack(stream, 'g', [ids[0]]), 1);
  const c1 = new Consumer(client, stream, 'g', 'c1'); // shares the client's channel
  assert.equal(await c1.ack(got.slice(1)), 2);
  assert.equal(await c1.ack(got), 0);
  c1.close();
  assert.deepEqual(await client.listPending(stream, 'g'), []);
});

test('reserved field is INVALID_ARGUMENT', async () => {
  await assert.rejects(client.produce(uniqueStream('reserved'), 'x', { type: 'y' }), (err) => {
    assert.ok(err instanceof StreamgateError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.equal(err.retryable, false);
    return true;
  });
});

test('missing group without createGroup is NOT_FOUND', async () => {
  const c = new Consumer(gateway.addr, uniqueStream('nogroup'), 'nope', 'c1');
  await assert.rejects(c[Symbol.asyncIterator]().next(), (err) => {
    assert.equal(err.code, status.NOT_FOUND);
    assert.match(err.details, /nope/);
    return true;
  });
  c.close();
});

test('two groups each get every entry', async () => {
  const stream = uniqueStream('groups');
  assert.equal(await client.createGroup(stream, 'billing'), true);
  assert.equal(await client.createGroup(stream, 'shipping'), true);
  const ids = await client.produceBatch(stream, Array.from({ length: 10 }, (_, i) => ({ type: 'order.placed', fields: { n: String(i) } })));
  const billing = new Collector(consumer(gateway.addr, stream, 'billing', 'b1', { batchSize: 3 }));
  const shipping = new Collector(consumer(gateway.addr, stream, 'shipping', 's1'));
  try {
    assert.deepEqual((await billing.waitFor(10)).map((e) => e.id), ids);
    assert.deepEqual((await shipping.waitFor(10)).map((e) => e.id), ids);
  } finally {
    await billing.stop();
    await shipping.stop();
  }
  await waitUntil('both groups fully acknowledged', async () => (await client.listGroups(stream)).every((g) => g.pending === 0));
});

test('two consumers in one group split the work without duplicates', async () => {
  const stream = uniqueStream('split');
  await client.createGroup(stream, 'workers');
  const a = new Collector(consumer(gateway.addr, stream, 'workers', 'a', { batchSize: 1 }));
  const b = new Collector(consumer(gateway.addr, stream, 'workers', 'b', { batchSize: 1 }));
  /** @type {string[]} */ const ids = [];
  const delivered = () => a.ids().length + b.ids().length;
  try {
    // Until both consumers have joined, one of them takes everything, and
    // Redis 7.0 lists a consumer only after its first successful read. So
    // produce one entry at a time until both got one (Redis serves blocked
    // readers first come, first served), then a batch for both to share.
    await waitUntil('both consumers to receive work', async () => {
      ids.push(await client.produce(stream, 'job', { n: String(ids.length) }));
      await waitUntil(`entry ${ids.length} delivered`, () => delivered() >= ids.length);
      return a.ids().length > 0 && b.ids().length > 0;
    });
    ids.push(...(await client.produceBatch(stream, Array.from({ length: 20 }, (_, i) => ({ type: 'job', fields: { n: String(i) } })))));
    await waitUntil('all entries delivered', () => delivered() >= ids.length);
  } finally {
    await a.stop();
    await b.stop();
  }
  const [gotA, gotB] = [a.ids(), b.ids()];
  assert.equal(new Set(gotA).size, gotA.length);
  assert.equal(new Set(gotB).size, gotB.length);
  assert.ok(!gotA.some((id) => gotB.includes(id)), 'an entry went to both consumers');
  assert.deepEqual([...gotA, ...gotB].sort(), [...ids].sort());
  await waitUntil('no pending entries', async () => (await client.listPending(stream, 'workers')).length === 0);
});

test('a peer reaps the entries of a crashed consumer', async () => {
  const stream = uniqueStream('reap');
  const ids = await client.produceBatch(stream, [0, 1, 2].map((n) => ({ type: 'order.paid', fields: { n: String(n) } })));
  const crashed = new Collector(consumer(gateway.addr, stream, 'g', 'crashy'), () => false);
  await crashed.waitFor(3).finally(() => crashed.stop()); // read, never acknowledged

  /** @type {Map<string, any>} */ const claimed = new Map();
  await waitUntil('the idle entries to be reaped', async () => {
    const result = await client.reap(stream, 'g', 'peer', 100);
    assert.deepEqual(result.deletedIds, []);
    for (const e of result.claimed) claimed.set(e.id, e);
    return claimed.size === 3;
  });
  assert.deepEqual([...claimed.keys()].sort(), ids);
  assert.deepEqual([...claimed.values()].map((e) => e.deliveryCount), [2, 2, 2]);
  assert.deepEqual(claimed.get(ids[0]).fields, { n: '0' });
  const pending = await client.listPending(stream, 'g');
  assert.deepEqual(pending.map((p) => [p.id, p.consumer, p.deliveryCount]), ids.map((id) => [id, 'peer', 2]));
  const byName = Object.fromEntries((await client.listConsumers(stream, 'g')).map((c) => [c.name, c]));
  assert.equal(byName.crashy.pending, 0);
  assert.equal(byName.peer.pending, 3);
  const peer = new Consumer(client, stream, 'g', 'peer');
  assert.equal(await peer.ack(ids), 3);
  peer.close();
});

test('replay', async () => {
  const stream = uniqueStream('replay');
  const ids = await client.produceBatch(stream, Array.from({ length: 7 }, (_, i) => ({ type: 't', fields: { n: String(i) } })));
  const collect = async (/** @type {AsyncIterable<any>} */ it) => { const out = []; for await (const e of it) out.push(e); return out; };
  const idsOf = async (/** @type {object} */ options) => (await collect(client.replay(stream, options))).map((e) => e.id);
  assert.deepEqual(await idsOf({}), ids);
  assert.deepEqual(await idsOf({ pageSize: 2 }), ids);
  assert.deepEqual(await idsOf({ reverse: true }), [...ids].reverse());
  assert.deepEqual(await idsOf({ limit: 3 }), ids.slice(0, 3));
  assert.deepEqual(await idsOf({ start: ids[2], end: ids[4] }), ids.slice(2, 5));
  assert.deepEqual(await idsOf({ start: ids[2], end: ids[4], reverse: true }), ids.slice(2, 5).reverse());
  const firstTwo = [];
  for await (const e of client.replay(stream, { pageSize: 1 })) {
    firstTwo.push(e.fields.n);
    if (firstTwo.length === 2) break; // cancels the call
  }
  assert.deepEqual(firstTwo, ['0', '1']);
  assert.ok((await collect(client.replay(stream))).every((e) => e.deliveryCount === 0 && e.redelivered === false));
  assert.deepEqual(await collect(client.replay(`${stream}-missing`)), []);
});

test('trim', async () => {
  const stream = uniqueStream('trim');
  const ids = await client.produceBatch(stream, Array.from({ length: 10 }, () => ({ type: 't' })), { maxLen: 0 });
  assert.equal(await client.trim(stream, { maxLen: 4, exact: true }), 6);
  const info = await client.describeStream(stream);
  assert.deepEqual([info.length, info.firstEntryId, info.lastEntryId], [4, ids[6], ids[9]]);
  assert.equal(await client.trim(stream, { minId: ids[8], exact: true }), 2);
  assert.equal((await client.describeStream(stream)).length, 2);
  await assert.rejects(client.trim(stream, { maxLen: 1, minId: ids[9] }), TypeError);
});

test('admin views and RemoveConsumer', async () => {
  const stream = uniqueStream('admin');
  assert.equal(await client.createGroup(stream, 'g', '$'), true);
  assert.equal(await client.createGroup(stream, 'g'), false);
  const ids = await client.produceBatch(stream, [1, 2, 3, 4].map(() => ({ type: 't' })));
  const c = new Collector(consumer(gateway.addr, stream, 'g', 'c1'), () => false);
  await c.waitFor(4).finally(() => c.stop());

  const info = await client.describeStream(stream);
  assert.deepEqual([info.length, info.groupCount, info.lastEntryId], [4, 1, ids[3]]);
  const listed = (await client.listStreams({ pageLimit: 2 })).filter((s) => s.name === stream);
  assert.deepEqual(listed, [{ name: stream, length: 4, lastEntryId: ids[3], groupCount: 1 }]);
  const [group] = await client.listGroups(stream);
  assert.deepEqual([group.name, group.consumers, group.pending, group.lastDeliveredId, group.lag], ['g', 1, 4, ids[3], 0]);
  assert.deepEqual((await client.listConsumers(stream, 'g')).map((x) => [x.name, x.pending]), [['c1', 4]]);
  assert.equal((await client.listPending(stream, 'g', { consumer: 'c1', count: 2 })).length, 2);
  assert.deepEqual(await client.listPending(stream, 'g', { consumer: 'other' }), []);

  await assert.rejects(client.removeConsumer(stream, 'g', 'c1'), (err) => err.code === status.FAILED_PRECONDITION);
  assert.deepEqual(await client.removeConsumer(stream, 'g', 'c1', 'c2'), { removed: true, handedOver: 4 });
  assert.deepEqual((await client.listConsumers(stream, 'g')).map((x) => [x.name, x.pending]), [['c2', 4]]);

  await client.setGroupCursor(stream, 'g', '0');
  assert.equal((await client.listGroups(stream))[0].lastDeliveredId, '0-0');
  assert.equal(await client.deleteGroup(stream, 'g'), true);
  assert.equal(await client.deleteGroup(stream, 'g'), false);
  await assert.rejects(client.listConsumers(stream, 'g'), (err) => err.code === status.NOT_FOUND);
});

test('RemoveConsumer of an unknown consumer is not INTERNAL', async () => {
  // docs/errors.md: INTERNAL is "never for anything a client can cause".
  // The proto promises `removed = false` for a consumer that did not exist;
  // NOT_FOUND would also be a client-side answer.
  const stream = uniqueStream('ghost');
  await client.createGroup(stream, 'g');
  try {
    assert.equal((await client.removeConsumer(stream, 'g', 'ghost')).removed, false);
  } catch (err) {
    assert.equal(/** @type {any} */ (err).code, status.NOT_FOUND, String(err));
  }
});

test('consumer resumes after the gateway restarts', async () => {
  // SIGTERM the consumer's gateway mid-iteration and start a new one on the
  // same port: the consumer reconnects by itself and receives its
  // unacknowledged entry again (pendingFirst), then entries produced meanwhile.
  const stream = uniqueStream('reconnect');
  let gw = await Gateway.start(redis.url);
  const addr = gw.addr;
  const c = new Collector(consumer(addr, stream, 'g', 'c1'), (e) => e.fields.ack !== 'no');
  try {
    const acked = await client.produce(stream, 't', { ack: 'yes' });
    const kept = await client.produce(stream, 't', { ack: 'no' });
    await c.waitFor(2);
    await waitUntil('the first entry acknowledged', async () => {
      const pending = await client.listPending(stream, 'g');
      return pending.length === 1 && pending[0].id === kept;
    });

    await gw.terminate();
    // Produced through the session's gateway while the consumer's is down.
    const fresh = await client.produce(stream, 't', { ack: 'yes' });
    gw = await Gateway.start(redis.url, addr);

    const got = await c.waitFor(4);
    assert.deepEqual(got.map((e) => e.id), [acked, kept, kept, fresh]);
    assert.deepEqual(got.map((e) => e.deliveryCount), [1, 1, 2, 1]);
    assert.deepEqual(got.map((e) => e.redelivered), [false, false, true, false]);
    assert.ok(c.consumer.reconnects >= 1);
    // The last ack is batched in band: wait for it to take effect.
    const pending = await waitUntil('the fresh entry acknowledged', async () => {
      const p = await client.listPending(stream, 'g');
      return p.length === 1 && p;
    });
    assert.deepEqual(pending.map((p) => [p.id, p.deliveryCount]), [[kept, 2]]);
  } finally {
    await c.stop();
    await gw.terminate();
  }
});

// -- delivery guarantees: nack, extend, reclaim, dead letters, back-pressure --

/**
 * Reclaim settings that recover only Nack'ed entries during a test: nothing
 * stays idle for a minute, and rounds run as often as the gateway allows
 * (its --block-ms bounds the resolution).
 */
const NACK_ONLY = { minIdleMs: 60_000, intervalMs: 50 };

/** IDs pending for one consumer. @param {string} stream @param {string} group @param {string} name */
async function pendingOf(stream, group, name) {
  return (await client.listPending(stream, group, { consumer: name })).map((p) => p.id);
}

test('nack with delay 0 redelivers to a reclaiming consumer', async () => {
  const stream = uniqueStream('nack');
  const [first, second] = await client.produceBatch(stream, [{ type: 'job', fields: { n: '0' } }, { type: 'job', fields: { n: '1' } }]);
  /** @type {number[]} */ const nacked = [];
  const w1 = consumer(client, stream, 'g', 'w1', { reclaim: NACK_ONLY });
  const c = new Collector(w1, undefined, async (e) => {
    if (e.id === first && !e.redelivered) nacked.push(await w1.nack(e)); // at the next reclaim round
    else await w1.ack(e);
  });
  const got = await c.waitFor(3).finally(() => c.stop());
  assert.deepEqual(nacked, [1]);
  assert.deepEqual(got.map((e) => [e.id, e.deliveryCount, e.redelivered]), [
    [first, 1, false],
    [second, 1, false],
    [first, 2, true],
  ]);
  assert.deepEqual([got[2].type, got[2].fields], ['job', { n: '0' }]);
  await waitUntil('everything acknowledged', async () => (await client.listPending(stream, 'g')).length === 0);
  // Nothing is pending any more: Nack and Extend affect nothing.
  assert.equal(await client.nack(stream, 'g', 'w1', [first], 1000), 0);
  assert.equal(await client.extend(stream, 'g', 'w1', [first]), 0);
});

test('extend returns the count', async () => {
  const stream = uniqueStream('extend');
  const ids = await client.produceBatch(stream, [0, 1, 2].map((n) => ({ type: 'job', fields: { n: String(n) } })));
  const c = new Collector(consumer(client, stream, 'g', 'w1'), () => false);
  const got = await c.waitFor(3).finally(() => c.stop());
  const w1 = new Consumer(client, stream, 'g', 'w1');
  assert.equal(await w1.extend(got[0]), 1);
  assert.equal(await w1.extend(got.slice(1)), 2);
  assert.equal(await w1.extend([]), 0);
  assert.equal(await client.extend(stream, 'g', 'someone-else', ids), 0); // not theirs
  // Extending resets the idle time but is not a delivery.
  assert.deepEqual((await client.listPending(stream, 'g')).map((p) => [p.id, p.deliveryCount]), ids.map((id) => [id, 1]));
  assert.equal(await w1.ack(got), 3);
  assert.equal(await w1.extend(ids), 0); // no longer pending
  w1.close();
});

test('a poison entry ends in the dead-letter stream', async () => {
  const stream = uniqueStream('poison');
  const ids = await client.produceBatch(stream, ['1', 'poison', '2'].map((id) => ({ type: 'order.paid', fields: { order_id: id } })));
  const poison = ids[1];
  const w1 = consumer(client, stream, 'g', 'w1', { reclaim: NACK_ONLY, maxDeliveries: 2 });
  const c = new Collector(w1, undefined, async (e) => {
    if (e.fields.order_id === 'poison') await w1.nack(e); // "processing failed", every time
    else await w1.ack(e);
  });
  /** @type {any[]} */ let dead = [];
  try {
    await waitUntil('the poison entry in the dead-letter stream', async () => {
      dead = [];
      for await (const e of client.replay(`${stream}:dlq`)) dead.push(e);
      return dead.length > 0;
    });
  } finally {
    await c.stop();
  }
  const got = c.entries;
  assert.deepEqual(got.filter((e) => e.id === poison).map((e) => e.deliveryCount), [1, 2]);
  assert.deepEqual(got.filter((e) => e.id !== poison).map((e) => e.id).sort(), [ids[0], ids[2]]);
  assert.equal(dead.length, 1);
  assert.equal(dead[0].type, 'order.paid');
  assert.deepEqual(dead[0].fields, {
    order_id: 'poison',
    'dlq.stream': stream,
    'dlq.id': poison,
    'dlq.group': 'g',
    'dlq.consumer': 'w1',
    'dlq.deliveries': '2',
    'dlq.reason': 'max_deliveries',
  });
  // Moved and acknowledged in one step: nothing left pending, nothing doubled.
  assert.deepEqual(await client.listPending(stream, 'g'), []);
});

test('maxInFlight caps what a consumer holds', async () => {
  const stream = uniqueStream('inflight');
  const cap = 3;
  const ids = await client.produceBatch(stream, Array.from({ length: 10 }, (_, i) => ({ type: 'job', fields: { n: String(i) } })));
  await client.createGroup(stream, 'g', '0'); // so the first look at the PEL finds the group
  const c = new Collector(consumer(client, stream, 'g', 'w1', { batchSize: 10, maxInFlight: cap }), () => false);
  /** @type {string[]} */ const acked = [];
  /** Checks the cap on every look; true once `n` entries arrived. @param {number} n */
  const holds = async (n) => {
    const pending = await pendingOf(stream, 'g', 'w1');
    assert.ok(pending.length <= cap, `PEL of w1 above maxInFlight: ${pending}`);
    assert.ok(c.ids().length - acked.length <= cap, 'the client holds more than maxInFlight');
    return c.ids().length >= n;
  };
  try {
    await waitUntil(`the first ${cap} entries`, () => holds(cap));
    assert.deepEqual(c.ids(), ids.slice(0, cap));
    // Each ack makes room for exactly one more.
    for (let n = cap + 1; n <= ids.length; n++) {
      const next = c.ids()[acked.length];
      assert.equal(await client.ack(stream, 'g', [next]), 1);
      acked.push(next);
      await waitUntil(`entry ${n} after an ack`, () => holds(n));
    }
    assert.deepEqual(c.ids(), ids);
    assert.equal((await pendingOf(stream, 'g', 'w1')).length, cap);
  } finally {
    await c.stop();
  }
  assert.equal(await client.ack(stream, 'g', ids), cap);
});

test('heartbeats are consumed silently', async () => {
  const stream = uniqueStream('heartbeat');
  /** @type {any[]} */ const beats = [];
  const c = new Collector(consumer(client, stream, 'g', 'w1', { heartbeatMs: 50, onHeartbeat: (/** @type {any} */ b) => beats.push(b) }));
  try {
    await waitUntil('two heartbeats', () => beats.length >= 2);
    assert.deepEqual(c.ids(), []); // never yielded as entries
    assert.ok((c.consumer.lastHeartbeat?.serverTimeMs ?? 0) > 0);
    const id = await client.produce(stream, 'job');
    assert.deepEqual((await c.waitFor(1)).map((e) => e.id), [id]);
  } finally {
    await c.stop();
  }
});

test('idempotent produce returns the same id', async () => {
  const stream = uniqueStream('idem');
  const first = await client.produce(stream, 'order.paid', { order_id: '1' }, { idempotencyKey: 'pay-1' });
  const again = await client.produce(stream, 'order.paid', { order_id: '1' }, { idempotencyKey: 'pay-1' });
  assert.equal(again, first);
  const producer = new Producer(client);
  const other = await producer.produce(stream, 'order.paid', { order_id: '2' }, { idempotencyKey: 'pay-2' });
  const batch = await producer.produceBatch(stream, [
    { type: 'order.paid', fields: { order_id: '2' }, idempotencyKey: 'pay-2' },
    { type: 'order.paid', fields: { order_id: '3' }, idempotencyKey: 'pay-3' },
    { type: 'order.note', fields: { order_id: '3' } }, // no key: always written
  ]);
  assert.notEqual(other, first);
  assert.equal(batch[0], other);
  assert.ok(![first, other].includes(batch[1]));
  const history = [];
  for await (const e of client.replay(stream)) history.push(e.id);
  assert.deepEqual(history, [first, other, batch[1], batch[2]]);
});

/**
 * The first `n` entries of a tail; closing it after `timeoutMs` ends the
 * iteration (and the test) instead of hanging.
 * @param {import('../src/index.js').Tail} tail @param {number} n @param {number} [timeoutMs]
 */
async function take(tail, n, timeoutMs = 15_000) {
  const guard = setTimeout(() => tail.close(), timeoutMs);
  const got = [];
  try {
    for await (const e of tail) {
      got.push(e);
      if (got.length === n) break;
    }
  } finally {
    clearTimeout(guard);
  }
  return got;
}

test('tail yields new entries', async () => {
  const stream = uniqueStream('tail');
  const old = await client.produce(stream, 't', { n: 'old' });
  // tail() resolves once the gateway has resolved `$`: everything produced
  // after it is seen, nothing before.
  let tail = await client.tail(stream);
  const fresh = await client.produceBatch(stream, [0, 1, 2].map((n) => ({ type: 't', fields: { n: String(n) } })));
  let got = await take(tail, 3);
  tail.close();
  assert.deepEqual(got.map((e) => e.id), fresh);
  assert.deepEqual(got.map((e) => e.fields.n), ['0', '1', '2']);
  assert.ok(got.every((e) => e.deliveryCount === 0 && !e.redelivered));

  tail = await client.tail(stream, { startId: '0', batchSize: 2 });
  got = await take(tail, 4);
  tail.close();
  assert.deepEqual(got.map((e) => e.id), [old, ...fresh]);
  tail = await client.tail(stream, { startId: old });
  got = await take(tail, 3);
  tail.close();
  assert.deepEqual(got.map((e) => e.id), fresh);
  // Tail does not join a group.
  assert.equal((await client.describeStream(stream)).groupCount, 0);
});

test('tail heartbeats and errors', async () => {
  const stream = uniqueStream('tailbeat');
  /** @type {any[]} */ const beats = [];
  const tail = await client.tail(stream, { heartbeatMs: 50, onHeartbeat: (b) => beats.push(b) });
  const reading = take(tail, 1);
  await waitUntil('two tail heartbeats', () => beats.length >= 2);
  assert.equal(tail.lastHeartbeat, beats.at(-1));
  tail.close();
  assert.deepEqual(await reading, []); // closing ends the iteration quietly
  await assert.rejects(client.tail(stream, { startId: 'not-an-id' }), (err) => {
    assert.ok(err instanceof StreamgateError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    return true;
  });
});

test('trim with ackedByAllGroups keeps what a group still needs', async () => {
  const stream = uniqueStream('safetrim');
  const ids = await client.produceBatch(stream, Array.from({ length: 6 }, (_, i) => ({ type: 't', fields: { n: String(i) } })), { maxLen: 0 });
  await client.createGroup(stream, 'fast', '0');
  await client.createGroup(stream, 'slow', ids[1]); // has "seen" the first two
  const c = new Collector(consumer(client, stream, 'fast', 'w1'), (e) => ids.slice(0, 4).includes(e.id));
  await c.waitFor(6).finally(() => c.stop());
  await waitUntil('fast acknowledged the first four', async () => JSON.stringify(await pendingOf(stream, 'fast', 'w1')) === JSON.stringify(ids.slice(4)));
  const remaining = async () => { const out = []; for await (const e of client.replay(stream)) out.push(e.id); return out; };
  // slow still needs ids[2..], fast needs ids[4..]: only the first two go.
  assert.equal(await client.trim(stream, { maxLen: 0, exact: true, ackedByAllGroups: true }), 2);
  assert.deepEqual(await remaining(), ids.slice(2));
  await client.deleteGroup(stream, 'slow');
  // It bounds maxLen too: keeping only ids[5] is asked for, but fast still
  // needs ids[4] (its oldest pending entry).
  assert.equal(await client.trim(stream, { maxLen: 1, exact: true, ackedByAllGroups: true }), 2);
  assert.deepEqual(await remaining(), ids.slice(4));
});

// -- Producer.publish: batching over one ProduceStream ------------------------

/** @param {Gateway} gw @param {string} rpc */
const okCalls = (gw, rpc) => gw.metric(`streamgate_rpc_requests_total{rpc="${rpc}",code="Ok"}`);

/** @param {string} id */
const idKey = (id) => id.split('-').map(Number);
/** @param {string[]} ids */
const inOrder = (ids) => ids.every((id, i) => i === 0 || idKey(ids[i - 1])[0] < idKey(id)[0] || (idKey(ids[i - 1])[0] === idKey(id)[0] && idKey(ids[i - 1])[1] < idKey(id)[1]));

/** Tracks whether a promise settled yet. @param {Promise<unknown>} p */
function tracked(p) {
  const t = { settled: false, promise: p };
  p.then(() => { t.settled = true; }, () => { t.settled = true; });
  return t;
}

test('publish batches events over one ProduceStream', async () => {
  const stream = uniqueStream('publish');
  const [streamsBefore, producesBefore] = [await okCalls(gateway, 'ProduceStream'), await okCalls(gateway, 'Produce')];
  // A linger far beyond the test: only maxEvents ships a batch.
  const producer = new Producer(gateway.addr, { batch: { maxEvents: 10, lingerMs: 600_000 } });
  const published = Array.from({ length: 25 }, (_, n) => tracked(producer.publish(stream, { type: 'job', fields: { n: String(n) } })));
  const ids = await Promise.all(published.slice(0, 20).map((t) => t.promise)); // two full batches
  assert.ok(!published.slice(20).some((t) => t.settled), 'a partial batch went out before its linger');
  assert.equal(producer.publisher.requestsSent, 2);
  await producer.flush();
  ids.push(...(await Promise.all(published.slice(20).map((t) => t.promise))));
  assert.equal(producer.publisher.requestsSent, 3);
  const later = producer.publish(stream, { type: 'job', fields: { n: '25' } });
  await producer.flush();
  ids.push(await later);
  assert.equal(producer.publisher.streamsOpened, 1);
  await producer.close();
  assert.equal(new Set(ids).size, 26);
  assert.ok(inOrder(ids), `ids out of order: ${ids}`);
  assert.deepEqual((await replayAll(stream)).map((e) => [e.id, e.fields.n]), ids.map((id, n) => [id, String(n)]));
  assert.equal((await okCalls(gateway, 'ProduceStream')) - streamsBefore, 1);
  assert.equal(await okCalls(gateway, 'Produce'), producesBefore);
});

test('publish linger sends a partial batch', async () => {
  const stream = uniqueStream('linger');
  const producer = new Producer(gateway.addr, { batch: { maxEvents: 1000, lingerMs: 50 } });
  // No flush, no full batch: only the linger can send these.
  const ids = await Promise.all([0, 1, 2].map((n) => producer.publish(stream, { type: 'job', fields: { n: String(n) } })));
  assert.equal(producer.publisher.requestsSent, 1);
  await producer.close();
  assert.equal(new Set(ids).size, 3);
  assert.ok(inOrder(ids));
});

test('publish maxBytes ships a batch', async () => {
  const stream = uniqueStream('bytes');
  const producer = new Producer(gateway.addr, { batch: { maxEvents: 1000, maxBytes: 3000, lingerMs: 600_000 } });
  const published = [0, 1, 2, 3].map(() => tracked(producer.publish(stream, { type: 'blob', fields: { data: 'x'.repeat(1000) } })));
  // The third event would pass 3000 bytes: the first two went alone.
  await published[0].promise;
  assert.equal(producer.publisher.requestsSent, 1);
  assert.equal(published[2].settled, false);
  await producer.flush();
  assert.equal(producer.publisher.requestsSent, 2);
  await producer.close();
});

test('a refused batch fails only its own publishes', async () => {
  const stream = uniqueStream('refused');
  const badStream = `${stream}-bad`;
  const producer = new Producer(gateway.addr, { batch: { lingerMs: 600_000 } });
  const good = [0, 1, 2].map((n) => producer.publish(stream, { type: 'ok', fields: { n: String(n) } }));
  const bad = [
    producer.publish(badStream, { type: 'ok', fields: { n: '0' } }),
    producer.publish(badStream, { type: 'x', fields: { ts_ms: '1' } }), // reserved field
  ];
  const outcomes = Promise.allSettled([...good, ...bad]);
  await producer.flush();
  const later = producer.publish(stream, { type: 'ok', fields: { n: '3' } });
  await producer.flush();
  const settled = await outcomes;
  for (const s of settled.slice(3)) {
    assert.equal(s.status, 'rejected');
    const err = /** @type {PromiseRejectedResult} */ (s).reason;
    assert.ok(err instanceof StreamgateError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.details, /ts_ms/);
  }
  const ids = [...settled.slice(0, 3).map((s) => /** @type {PromiseFulfilledResult<string>} */ (s).value), await later];
  assert.equal(producer.publisher.streamsOpened, 1); // the stream went on
  await producer.close();
  assert.deepEqual((await replayAll(stream)).map((e) => e.id), ids);
  assert.deepEqual(await replayAll(badStream), []);
});

test('publish passes idempotency keys', async () => {
  const stream = uniqueStream('idem-publish');
  const producer = new Producer(gateway.addr);
  const first = await producer.publish(stream, { type: 'pay', fields: { n: '1' }, idempotencyKey: 'k1' });
  const again = await producer.publish(stream, { type: 'pay', fields: { n: '1' }, idempotencyKey: 'k1' });
  await producer.close();
  assert.equal(again, first);
  assert.deepEqual((await replayAll(stream)).map((e) => e.id), [first]);
});

test('partition keys are stored and returned', async () => {
  const stream = uniqueStream('keys');
  const produced = await client.produce(stream, 'order.placed', { n: '0' }, { key: 'customer-1' });
  const producer = new Producer(gateway.addr);
  const published = await Promise.all([
    producer.publish(stream, { type: 'order.paid', fields: { n: '1' }, key: 'customer-2' }),
    producer.publish(stream, { type: 'order.paid', fields: { n: '2' } }),
  ]);
  const options = { key: 'customer-3', idempotencyKey: 'ship-3' };
  const shipped = await producer.produce(stream, 'order.shipped', { n: '3' }, options);
  assert.equal(await producer.produce(stream, 'order.shipped', { n: '3' }, options), shipped);
  await producer.close();
  const ids = [produced, ...published, shipped];
  const expected = [[ids[0], 'customer-1'], [ids[1], 'customer-2'], [ids[2], ''], [ids[3], 'customer-3']];

  const replayed = await replayAll(stream);
  assert.deepEqual(replayed.map((e) => [e.id, e.key]), expected);
  assert.ok(replayed.every((e) => e.partition === 0 && !('partition_key' in e.fields)));
  const c = new Collector(consumer(gateway.addr, stream, 'g', 'c1'));
  const got = await c.waitFor(4).finally(() => c.stop());
  assert.deepEqual(got.map((e) => [e.id, e.key]), expected);

  await assert.rejects(client.produce(stream, 'x', { partition_key: 'k' }), (err) => {
    assert.ok(err instanceof StreamgateError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.message, /partition_key/);
    return true;
  });
});

test('publish resends after a gateway restart', async () => {
  const stream = uniqueStream('publish-restart');
  let gw = await Gateway.start(redis.url);
  const addr = gw.addr;
  const producer = new Producer(addr, { batch: { lingerMs: 0 } });
  try {
    const first = await producer.publish(stream, { type: 'e', fields: { n: '0' }, idempotencyKey: 'e0' });
    await gw.terminate(); // ends the stream with UNAVAILABLE
    const pending = [1, 2, 3].map((n) => producer.publish(stream, { type: 'e', fields: { n: String(n) }, idempotencyKey: `e${n}` }));
    pending.forEach((p) => p.catch(() => {})); // awaited below
    gw = await Gateway.start(redis.url, addr);
    const ids = [first, ...(await Promise.all(pending))];
    assert.ok(producer.publisher.streamsOpened >= 2);
    assert.deepEqual((await replayAll(stream)).map((e) => [e.id, e.fields.n]), ids.map((id, n) => [id, String(n)]));
  } finally {
    await producer.close();
    await gw.terminate();
  }
});

/** @param {string} stream */
async function replayAll(stream) {
  const entries = [];
  for await (const e of client.replay(stream)) entries.push(e);
  return entries;
}

// -- Consumer over Consume: in-band acks and lease extension ------------------

test('acks go in band in batches', async () => {
  const stream = uniqueStream('inband');
  const ids = await client.produceBatch(stream, Array.from({ length: 15 }, (_, n) => ({ type: 'job', fields: { n: String(n) } })));
  const [acksBefore, consumesBefore] = [await okCalls(gateway, 'Ack'), await okCalls(gateway, 'Consume')];
  // A long delay: only ackBatchSize (or close) sends acks.
  const c = consumer(gateway.addr, stream, 'g', 'w1', { batchSize: 20, ackBatchSize: 10, ackDelayMs: 600_000 });
  /** @type {ReturnType<typeof tracked>[]} */ const acks = [];
  /** @type {Promise<number> | undefined} */ let again;
  try {
    for await (const entry of c) {
      acks.push(tracked(c.ack(entry)));
      if (acks.length === 10) {
        // Ten acks make one message; its Confirm resolves all ten.
        assert.deepEqual(await Promise.all(acks.map((t) => t.promise)), Array(10).fill(1));
        assert.deepEqual(await pendingOf(stream, 'g', 'w1'), ids.slice(10));
      }
      if (acks.length === ids.length) {
        // Five more acks, below the batch size, then IDs acked before: all
        // wait for close().
        assert.ok(!acks.slice(10).some((t) => t.settled), 'acks sent before their batch was full');
        again = c.ack(ids.slice(0, 2));
        break;
      }
    }
  } finally {
    await c.close();
  }
  assert.deepEqual(await Promise.all(acks.map((t) => t.promise)), Array(ids.length).fill(1));
  assert.equal(await again, 0); // not pending any more: confirmed as not_pending
  assert.deepEqual(await client.listPending(stream, 'g'), []);
  assert.equal(await okCalls(gateway, 'Ack'), acksBefore); // all in band
  assert.equal((await okCalls(gateway, 'Consume')) - consumesBefore, 1);
});

test('nack and extend go in band', async () => {
  const stream = uniqueStream('inband-nack');
  const [first, second] = await client.produceBatch(stream, [{ type: 'job' }, { type: 'job' }]);
  const before = (await okCalls(gateway, 'Nack')) + (await okCalls(gateway, 'Extend'));
  const c = consumer(gateway.addr, stream, 'g', 'w1', { reclaim: NACK_ONLY });
  /** @type {Array<[string, boolean]>} */ const seen = [];
  try {
    for await (const entry of c) {
      seen.push([entry.id, entry.redelivered]);
      if (entry.id === first && !entry.redelivered) {
        assert.equal(await c.extend(entry), 1);
        assert.equal(await c.extend('0-1'), 0); // never delivered
        assert.equal(await c.nack(entry), 1);
      } else {
        assert.equal(await c.ack(entry), 1);
      }
      if (seen.length === 3) break;
    }
  } finally {
    await c.close();
  }
  assert.deepEqual(seen, [[first, false], [second, false], [first, true]]);
  assert.equal((await okCalls(gateway, 'Nack')) + (await okCalls(gateway, 'Extend')), before);
  assert.deepEqual(await client.listPending(stream, 'g'), []);
});

test('a slow handler keeps its lease', async () => {
  // A handler slower than the group's reclaim threshold (1 s): with lease
  // extension the reclaiming peer never takes the entry; without it, it does.
  const thresholdMs = 1000;
  for (const [leaseMs, expectTaken] of /** @type {Array<[number, boolean]>} */ ([[thresholdMs, false], [0, true]])) {
    const stream = uniqueStream(`lease-${leaseMs}`);
    const [id] = await client.produceBatch(stream, [{ type: 'slow' }]);
    /** @type {() => void} */ let release = () => {};
    const released = new Promise((resolve) => { release = () => resolve(undefined); });
    /** @type {string[]} */ const handled = [];
    const slowConsumer = consumer(gateway.addr, stream, 'g', 'slow', { leaseMs });
    const slow = new Collector(slowConsumer, undefined, async (entry) => {
      await released;
      handled.push(entry.id);
      return slowConsumer.ack(entry);
    });
    await slow.waitFor(1);
    const started = Date.now();
    const peer = new Collector(consumer(gateway.addr, stream, 'g', 'peer', {
      heartbeatMs: 50, reclaim: { minIdleMs: thresholdMs, intervalMs: 100 },
    }));
    try {
      if (expectTaken) {
        assert.deepEqual((await peer.waitFor(1)).map((e) => e.id), [id]);
      } else {
        // Three reclaim thresholds of work while the peer reclaims.
        await waitUntil('3 s of slow work', () => Date.now() - started > 3 * thresholdMs, 10_000);
        assert.deepEqual(peer.ids(), []);
        assert.ok(slowConsumer.extensionsSent >= 3, `${slowConsumer.extensionsSent} extensions`);
      }
      release();
      await waitUntil('the entry acknowledged', async () => (await client.listPending(stream, 'g')).length === 0);
    } finally {
      release();
      await slow.stop();
      await peer.stop();
    }
    assert.deepEqual(handled, [id]);
    assert.deepEqual(slow.ids(), [id]);
    if (!expectTaken) assert.deepEqual(peer.ids(), []);
  }
});

// -- ordered consumption: one owner per partition, acks in order, process() ---

/** The gateway's partition for `key` (docs/partitions.md: FNV-1a, 32 bits). @param {string} key @param {number} partitions */
function partitionOf(key, partitions) {
  let h = 2166136261;
  for (const b of Buffer.from(key)) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h % partitions;
}

/**
 * Every entry handed to the handlers of several `process` calls, in the
 * order they were handed, with the name of the consumer.
 */
class Journal {
  constructor() {
    /** @type {Array<[string, any]>} */ this.entries = [];
  }

  /** Per key, the sequence numbers of its entries in the order they were first handed to a handler. */
  firstProcessings() {
    /** @type {Record<string, number[]>} */ const firsts = {};
    const seen = new Set();
    for (const [, e] of this.entries) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      (firsts[e.key] ??= []).push(Number(e.fields.seq));
    }
    return firsts;
  }

  /** How many distinct entries were handled. */
  distinct() {
    return new Set(this.entries.map(([, e]) => e.id)).size;
  }
}

/**
 * Runs `consumer.process(handler, { concurrency })` in the background; the
 * handler records each entry in `journal`, waits for `gate` (if given; else
 * yields once, a stand-in for asynchronous work, so handlers interleave)
 * and throws where `fail` says.
 */
class Processor {
  /**
   * @param {Consumer} consumer @param {Journal} journal
   * @param {{ concurrency?: number, fail?: (e: any) => boolean, gate?: Promise<unknown> }} [options]
   */
  constructor(consumer, journal, { concurrency = 2, fail = () => false, gate = undefined } = {}) {
    this.consumer = consumer;
    /** @type {unknown} */ this.error = undefined;
    this.done = consumer.process(async (entry) => {
      journal.entries.push([consumer.consumer, entry]);
      await (gate ?? new Promise((resolve) => setImmediate(resolve)));
      if (fail(entry)) throw new Error(`failing ${entry.id} on purpose`);
    }, { concurrency }).catch((err) => { this.error = err; });
  }

  check() {
    if (this.error) throw this.error;
  }

  async stop() {
    await this.consumer.close();
    await this.done;
    this.check();
  }
}

/**
 * `perKey` events for each key, interleaved, each with its sequence number
 * within its key (from `start`) in `seq`.
 * @param {string[]} keys @param {number} perKey @param {number} [start]
 */
function keyedEvents(keys, perKey, start = 0) {
  return Array.from({ length: perKey }, (_, n) => keys.map((key) => ({ type: 'step', fields: { seq: String(start + n) }, key }))).flat();
}

/** How many partitions each consumer of `group` owns. @param {string} stream @param {string} group */
async function owners(stream, group) {
  /** @type {Record<string, number>} */ const counts = {};
  for (const p of await client.listPartitions(stream, group)) if (p.owner) counts[p.owner] = (counts[p.owner] ?? 0) + 1;
  return counts;
}

/** @param {string} stream @param {string} name @param {object} [options] */
function ordered(stream, name, options = {}) {
  return consumer(client, stream, 'g', name, { ordered: true, ...options });
}

/** Sorts partition-qualified IDs `p/ms-seq` by partition, then ID. @param {string} a @param {string} b */
function byQualifiedId(a, b) {
  const key = (/** @type {string} */ id) => { const [p, rest] = id.split('/'); return [Number(p), ...rest.split('-').map(Number)]; };
  const [x, y] = [key(a), key(b)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

test('ordered requires a partitioned stream', async () => {
  const stream = uniqueStream('ordered-plain');
  await client.produce(stream, 't');
  const c = ordered(stream, 'a');
  await assert.rejects(c[Symbol.asyncIterator]().next(), (err) => {
    assert.ok(err instanceof StreamgateError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    return true;
  });
  await c.close();
});

test('ordered consumers share the partitions and keep key order', async () => {
  const stream = uniqueStream('ordered');
  assert.equal(await client.createStream(stream, 4), true);
  assert.equal((await client.describeStream(stream)).partitions, 4);
  await client.createGroup(stream, 'g', '0');
  const keys = Array.from({ length: 12 }, (_, n) => `customer-${n}`);
  const perKey = 30;
  // Half of the events before the consumers start, half once they share
  // the work. b joins while a's handlers are held up and a holds entries of
  // every partition, so two partitions change hands with entries pending:
  // b gets them again, and a still handles the ones it holds.
  await client.produceBatch(stream, keyedEvents(keys, perKey / 2));
  const journal = new Journal();
  /** @type {() => void} */ let open = () => {};
  const gate = new Promise((resolve) => { open = () => resolve(undefined); });
  const a = new Processor(ordered(stream, 'a'), journal, { gate });
  /** @type {Processor | undefined} */ let b;
  try {
    await waitUntil('a to hold entries of every partition', async () =>
      (await client.listPartitions(stream, 'g')).every((p) => p.owner === 'a' && p.pending > 0));
    b = new Processor(ordered(stream, 'b'), journal);
    await waitUntil('a and b to own two partitions each', async () => {
      a.check();
      b?.check();
      const o = await owners(stream, 'g');
      return o.a === 2 && o.b === 2;
    }, 30_000);
    open();
    await client.produceBatch(stream, keyedEvents(keys, perKey / 2, perKey / 2));
    await waitUntil('every event processed', () => journal.distinct() === keys.length * perKey, 30_000);
    await waitUntil('every entry acknowledged', async () => (await client.listPending(stream, 'g')).length === 0);
  } finally {
    open();
    await a.stop();
    await b?.stop();
  }
  const inOrder = Array.from({ length: perKey }, (_, n) => n);
  assert.deepEqual(journal.firstProcessings(), Object.fromEntries(keys.map((k) => [k, inOrder])));
  // b took over entries a had received: they came to b again.
  assert.ok(journal.entries.some(([name, e]) => name === 'b' && e.redelivered));
});

test('a failed handler replays its partition in order', async () => {
  const stream = uniqueStream('ordered-fail');
  await client.createStream(stream, 4);
  await client.createGroup(stream, 'g', '0');
  const keys = Array.from({ length: 8 }, (_, n) => `order-${n}`);
  const perKey = 12;
  const journal = new Journal();
  /** @type {string[]} */ const failed = [];
  /** Fails once, on the 6th entry of the first key. @param {any} e */
  const fail = (e) => {
    if (e.key !== keys[0] || e.fields.seq !== '5' || failed.length > 0) return false;
    failed.push(e.id);
    return true;
  };
  const a = new Processor(ordered(stream, 'a'), journal, { fail });
  const b = new Processor(ordered(stream, 'b'), journal, { fail });
  /** @type {string[]} */ let ids = [];
  try {
    await waitUntil('a and b to own two partitions each', async () => {
      const o = await owners(stream, 'g');
      return o.a === 2 && o.b === 2;
    }, 30_000);
    ids = await client.produceBatch(stream, keyedEvents(keys, perKey));
    await waitUntil('every event processed', () => journal.distinct() === ids.length, 30_000);
    await waitUntil('every entry acknowledged', async () => (await client.listPending(stream, 'g')).length === 0);
  } finally {
    await a.stop();
    await b.stop();
  }
  assert.equal(failed.length, 1);
  const bad = failed[0];
  const partition = Number(bad.split('/')[0]);
  // The partition's entries in stream order, and as its handler saw them:
  // up to the failed one, then from the failed one again, in order. An
  // entry after the failed one handled before its re-delivery (not
  // redelivered) is one the gateway read before it applied the Nack and
  // sent afterwards.
  const inStream = ids.filter((id) => id.startsWith(`${partition}/`)).sort(byQualifiedId);
  const seen = journal.entries.filter(([, e]) => e.partition === partition).map(([, e]) => [e.id, e.redelivered]);
  const at = inStream.indexOf(bad);
  assert.deepEqual(seen.map(([id]) => id), [...inStream.slice(0, at + 1), ...inStream.slice(at)],
    `failed ${bad}; handled ${JSON.stringify(seen)}`);
  assert.deepEqual(seen[at + 1], [bad, true]);
  const inOrder = Array.from({ length: perKey }, (_, n) => n);
  assert.deepEqual(journal.firstProcessings(), Object.fromEntries(keys.map((k) => [k, inOrder])));
});

test('ordered acks wait for their line and a nack cuts it', async () => {
  // Rule 1: an ack waits until the entries received before it in its
  // partition are acked. Rule 2: a nack drops the later entries of its
  // partition (their acks are not sent); they come again after it.
  const stream = uniqueStream('ordered-lines');
  await client.createStream(stream, 4);
  let other = 'b0';
  for (let n = 1; partitionOf(other, 4) === partitionOf('a', 4); n++) other = `b${n}`;
  const ids = await client.produceBatch(stream, [
    ...[0, 1, 2, 3, 4].map((n) => ({ type: 't', fields: { seq: String(n) }, key: 'a' })),
    { type: 't', key: other },
  ]);
  const [aIds, bId] = [ids.slice(0, 5), ids[5]];
  const c = ordered(stream, 'w1', { ackBatchSize: 1 });
  const guard = setTimeout(() => c.close(), 30_000); // a hang ends the iteration, and the test
  const it = c[Symbol.asyncIterator]();
  /** @param {number} n */
  const take = async (n) => {
    const out = [];
    while (out.length < n) {
      const next = await it.next();
      assert.ok(!next.done, 'the iteration ended');
      out.push(next.value);
    }
    return out;
  };
  try {
    const got = new Map((await take(6)).map((e) => [e.id, e]));
    assert.deepEqual([...got.keys()].sort(), [...ids].sort());
    const a = aIds.map((id) => got.get(id));

    const held = tracked(c.ack(a[2])); // waits for a[0] and a[1]
    // Messages are confirmed in order: once a later ack is, an earlier
    // message would have been too.
    assert.equal(await c.ack(/** @type {any} */ (got.get(bId))), 1);
    assert.equal(held.settled, false);
    assert.deepEqual(await pendingOf(stream, 'g', 'w1'), aIds);

    assert.equal(await c.nack(a[1]), 1);
    assert.equal(await held.promise, 0); // dropped: a[2] comes again
    assert.equal(await c.ack(a[3]), 0); // dropped too, not sent
    assert.equal(await c.ack(a[0]), 1);
    assert.deepEqual(await pendingOf(stream, 'g', 'w1'), aIds.slice(1));

    const again = await take(4);
    assert.deepEqual(again.map((e) => [e.id, e.redelivered]), aIds.slice(1).map((id) => [id, true]));
    const acks = [...again].reverse().map((e) => c.ack(e)); // backwards: all wait for again[0]
    assert.deepEqual(await Promise.all(acks), [1, 1, 1, 1]);
    assert.deepEqual(await client.listPending(stream, 'g'), []);
  } finally {
    clearTimeout(guard);
    await it.return(undefined);
    await c.close();
  }
});

/**
 * A stand-in for the gateway's Consume that plays a script, so a test fixes
 * the order of every message on the call: `script(next, send)` reads the
 * client's messages with `await next()`, checks them, and `send`s the
 * responses. A failed check ends the call with FAILED_PRECONDITION (which the
 * iteration throws); once the script is done, any further message is a
 * failure too, reported by `check`.
 */
class ScriptedGateway {
  /**
   * @param {(next: () => Promise<any>, send: (response: object) => void) => Promise<void>} script
   * @returns {Promise<ScriptedGateway>}
   */
  static async start(script) {
    const gateway = new ScriptedGateway();
    gateway.server.addService(loadServices().EventStream.service, {
      Consume: (/** @type {any} */ call) => gateway.consume(call, script),
    });
    const port = await new Promise((resolve, reject) => gateway.server.bindAsync(
      '127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    gateway.addr = `127.0.0.1:${port}`;
    return gateway;
  }

  constructor() {
    this.server = new grpc.Server();
    this.addr = '';
    /** @type {string | null} */ this.failure = null;
  }

  /** @param {any} call @param {(next: () => Promise<any>, send: (response: object) => void) => Promise<void>} script */
  async consume(call, script) {
    /** @type {any[]} */ const requests = [];
    /** @type {Array<(request: any) => void>} */ const waiting = [];
    let ended = false;
    call.on('data', (/** @type {any} */ request) => {
      const waiter = waiting.shift();
      if (waiter) waiter(request);
      else requests.push(request);
    });
    call.on('end', () => { ended = true; for (const w of waiting.splice(0)) w(null); });
    /** The next message; null once the client half-closed. @returns {Promise<any>} */
    const receive = async () => requests.shift() ?? (ended ? null : new Promise((resolve) => waiting.push(resolve)));
    const next = async () => (await receive()) ?? Promise.reject(new Error('the client half-closed'));
    try {
      await script(next, (response) => call.write(response));
      const request = await receive(); // until the client half-closes
      if (request) throw new Error(`unexpected message after the script: ${JSON.stringify(request)}`);
      call.end();
    } catch (err) {
      this.failure = `script: ${err}`;
      call.emit('error', { code: status.FAILED_PRECONDITION, details: this.failure });
    }
  }

  check() {
    assert.equal(this.failure, null);
  }

  stop() {
    this.server.forceShutdown();
  }
}

/** A batch of entries `p/ms-seq` as the gateway sends it. @param {string[]} ids @param {boolean} [redelivered] */
function scriptedBatch(ids, redelivered = false) {
  return {
    batch: {
      entries: ids.map((id) => ({
        id, type: 't', partition: Number(id.split('/')[0]), deliveryCount: redelivered ? 2 : 1, redelivered,
      })),
    },
  };
}

/** @param {string} op @param {{ done?: string[], notPending?: string[] }} ids */
function scriptedConfirm(op, { done = [], notPending = [] }) {
  return { confirm: { op, done, notPending } };
}

test('a nack holds its partition until its Confirm', async () => {
  // Rule 3, message by message against a scripted gateway: the entries of a
  // nacked entry's partition that arrive before the nack's Confirm wait for
  // it (the gateway sends everything it read before the nack ahead of the
  // Confirm, docs/ordered.md). When the nacked entry is done, those from it
  // on are dropped (they come again, after the Confirm); when it is not,
  // they are all handed out. Other partitions flow on meanwhile.
  const [a, b, c, e] = ['1/5-0', '1/5-1', '1/5-2', '1/5-3']; // partition 1
  const [d, f] = ['2/5-0', '2/5-1']; // partition 2
  const gateway = await ScriptedGateway.start(async (next, send) => {
    assert.equal((await next()).open?.ordered, true);
    send(scriptedBatch([a, b]));
    assert.deepEqual((await next()).nack?.ids, [b]);
    send(scriptedBatch([c, d])); // read before the nack took effect
    assert.deepEqual((await next()).ack?.ids, [d]); // d handed out; c waits
    send(scriptedConfirm('CONFIRM_OP_NACK', { done: [b] })); // partition 1 starts again at b
    send(scriptedConfirm('CONFIRM_OP_ACK', { done: [d] }));
    send(scriptedBatch([b, c], true));
    assert.deepEqual((await next()).nack?.ids, [c]);
    send(scriptedBatch([e, f]));
    assert.deepEqual((await next()).ack?.ids, [f]); // f handed out; e waits
    send(scriptedConfirm('CONFIRM_OP_NACK', { notPending: [c] })); // not done: nothing comes again
    send(scriptedConfirm('CONFIRM_OP_ACK', { done: [f] }));
  });
  const c1 = new Consumer(gateway.addr, 's', 'g', 'w1', { ordered: true, ackBatchSize: 1, leaseMs: 0 });
  const guard = setTimeout(() => c1.close(), 30_000); // a hang ends the iteration, and the test
  const it = c1[Symbol.asyncIterator]();
  const take = async () => {
    const next = await it.next();
    assert.ok(!next.done, 'the iteration ended');
    return next.value;
  };
  try {
    const first = [await take(), await take()];
    assert.deepEqual(first.map((x) => x.id), [a, b]);
    let nacked = c1.nack(first[1]);
    let got = await take();
    assert.deepEqual([got.id, got.redelivered], [d, false]); // not c: it waits for the Confirm
    assert.equal(await c1.ack(got), 1);
    assert.equal(await nacked, 1);
    const again = [await take(), await take()]; // c was dropped: b and c come again, in order
    assert.deepEqual(again.map((x) => [x.id, x.redelivered]), [[b, true], [c, true]]);
    nacked = c1.nack(again[1]);
    got = await take();
    assert.deepEqual([got.id, got.redelivered], [f, false]); // not e: it waits for the Confirm
    assert.equal(await c1.ack(got), 1);
    assert.equal(await nacked, 0);
    got = await take();
    assert.deepEqual([got.id, got.redelivered], [e, false]); // released: c was not done
  } finally {
    clearTimeout(guard);
    await it.return(undefined);
    await c1.close();
    gateway.stop();
  }
  gateway.check();
});

test('process handles every entry unordered', async () => {
  const stream = uniqueStream('process');
  const ids = await client.produceBatch(stream, Array.from({ length: 20 }, (_, n) => ({ type: 'job', fields: { seq: String(n) } })));
  const journal = new Journal();
  const p = new Processor(consumer(client, stream, 'g', 'w1', { reclaim: NACK_ONLY }), journal, {
    concurrency: 4, fail: (e) => e.id === ids[3] && !e.redelivered,
  });
  try {
    await waitUntil('every entry processed, the failed one twice', () => journal.entries.length >= ids.length + 1);
    await waitUntil('every entry acknowledged', async () => (await client.listPending(stream, 'g')).length === 0);
  } finally {
    await p.stop();
  }
  assert.deepEqual(journal.entries.map(([, e]) => e.id).sort(), [...ids, ids[3]].sort());
});
