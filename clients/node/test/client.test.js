// End-to-end tests of the Node client against the real gateway and Redis.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Client, Consumer, Producer, StreamgateError, status } from '../src/index.js';
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
 * acknowledging those `shouldAck` accepts (default: all).
 */
class Collector {
  /** @param {Consumer} consumer @param {(e: any) => boolean} [shouldAck] */
  constructor(consumer, shouldAck = () => true) {
    this.consumer = consumer;
    /** @type {any[]} */ this.entries = [];
    /** @type {unknown} */ this.error = undefined;
    this.done = (async () => {
      try {
        for await (const entry of consumer) {
          this.entries.push(entry);
          if (shouldAck(entry)) await consumer.ack(entry);
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

  /** Waits until at least `n` entries arrived; resolves to them all. @param {number} n */
  waitFor(n) {
    return waitUntil(`${n} entries for ${this.consumer.consumer}`, () => this.ids().length >= n && this.entries);
  }

  async stop() {
    this.consumer.close();
    await this.done;
  }
}

/** @param {string} addr @param {string} stream @param {string} group @param {string} name @param {object} [options] */
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
  assert.ok((await collect(client.replay(stream))).every((e) => e.deliveryCount === 0));
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
  // API.md: INTERNAL is "never for anything a client can cause". The proto
  // promises `removed = false` for a consumer that did not exist; NOT_FOUND
  // would also be a client-side answer.
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
    assert.ok(c.consumer.reconnects >= 1);
    const pending = await client.listPending(stream, 'g');
    assert.deepEqual(pending.map((p) => [p.id, p.deliveryCount]), [[kept, 2]]);
  } finally {
    await c.stop();
    await gw.terminate();
  }
});
