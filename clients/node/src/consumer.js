// @ts-check
/**
 * `Consumer`: a consumer-group member over one Consume stream that survives
 * gateway restarts.
 *
 * Delivery is at-least-once. The gateway never acknowledges on the
 * consumer's behalf, so an entry is pending until `ack`. Acks, nacks and
 * extensions go in band on the Consume stream that delivers the entries:
 * acks are batched (one message per `ackBatchSize` IDs or `ackDelayMs`,
 * whichever comes first) and every message is answered by a Confirm that
 * resolves the promises `ack`/`nack`/`extend` returned.
 *
 * While entries are held (delivered and neither acked nor nacked: being
 * handled, or waiting to be), the consumer extends their lease every
 * `leaseMs / 2`, so a reclaiming peer whose `minIdleMs` is at least
 * `leaseMs` does not take slow-but-alive work over.
 *
 * When a gateway shuts down it ends every stream with UNAVAILABLE; the
 * consumer then reconnects with capped exponential backoff and
 * `pendingFirst`, so the entries it had received (or the gateway had read
 * for it) but not acknowledged come first, followed by new ones. Acks not
 * yet confirmed are sent again on the new stream. Such an entry may
 * therefore be seen twice: make processing idempotent, and check
 * `redelivered` / `deliveryCount` if that matters.
 *
 * With `reclaim` the subscription also recovers the work of crashed peers
 * (entries of the group idle for `minIdleMs`) and entries given back with
 * `nack`; `maxDeliveries` moves an entry that keeps failing to a dead-letter
 * stream instead of delivering it forever; `maxInFlight` bounds how many
 * unacknowledged entries this consumer holds.
 * @module
 */

import { setTimeout as sleep } from 'node:timers/promises';

import { RECONNECT_CODES, delays } from './backoff.js';
import { Client, StreamgateError } from './client.js';
import { toEntry, toHeartbeat } from './model.js';

export { RECONNECT_CODES };

/** @typedef {import('./model.js').Entry} Entry */
/** @typedef {import('./model.js').Heartbeat} Heartbeat */
/** @typedef {import('./model.js').Reclaim} Reclaim */
/** @typedef {import('./model.js').ReapResult} ReapResult */
/** @typedef {import('./backoff.js').Backoff} Backoff */

/**
 * One ack, nack or extend message, with the callers' promises: each resolves
 * to how many of its own IDs the Confirm lists as done.
 */
class Op {
  /** @param {'ack' | 'nack' | 'extend'} kind @param {number} [delayMs] */
  constructor(kind, delayMs = 0) {
    this.kind = kind;
    this.delayMs = delayMs;
    /** @type {string[]} */ this.ids = [];
    /** @type {Array<{ ids: string[], resolve: (n: number) => void, reject: (err: Error) => void }>} */
    this.parts = [];
  }

  /** @param {string[]} ids @returns {Promise<number>} */
  add(ids) {
    this.ids.push(...ids);
    return new Promise((resolve, reject) => this.parts.push({ ids, resolve, reject }));
  }

  toRequest() {
    if (this.kind === 'nack') return { nack: { ids: this.ids, delayMs: this.delayMs } };
    return { [this.kind]: { ids: this.ids } };
  }

  /** @param {{ done: string[] }} confirm */
  confirm(confirm) {
    const done = new Set(confirm.done);
    for (const part of this.parts) part.resolve(part.ids.filter((id) => done.has(id)).length);
  }

  /** @param {Error} error */
  fail(error) {
    for (const part of this.parts) part.reject(error);
  }
}

/**
 * What a Consume call hands to the iteration, in order; `next()` waits.
 * @typedef {{ batch: Entry[] } | { heartbeat: Heartbeat } | { end: StreamgateError | null }} Item
 */
class Inbox {
  constructor() {
    /** @type {Item[]} */ this.items = [];
    /** @type {((item: Item) => void) | null} */ this.waiter = null;
  }

  /** @param {Item} item */
  push(item) {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(item);
    } else this.items.push(item);
  }

  /** @returns {Promise<Item>} */
  next() {
    const item = this.items.shift();
    if (item) return Promise.resolve(item);
    return new Promise((resolve) => { this.waiter = resolve; });
  }
}

/**
 * @typedef {object} ConsumerOptions
 * @property {boolean} [createGroup] Create the group (and stream) if missing.
 * @property {string} [groupStartId] Where a created group starts: `$` (default, new entries
 *   only), `0` (the whole stream) or an ID.
 * @property {number} [batchSize] Most entries per read; 0 = the gateway's default.
 * @property {boolean} [pendingFirst] First re-deliver this consumer's unacknowledged entries,
 *   e.g. of a previous run under the same name (default true; reconnects always do). That
 *   includes entries the gateway read for a closed subscription but could not deliver: it may
 *   go on reading for up to its `--block-ms` after a client goes away, and such entries stay
 *   pending for this consumer name.
 * @property {Reclaim} [reclaim] Every `intervalMs` (default `minIdleMs / 2`) claim the group's
 *   entries idle for at least `minIdleMs` (a crashed peer's work) and entries whose `nack`
 *   delay has passed, and deliver them with `redelivered` set. Unset: no automatic recovery.
 * @property {number} [maxDeliveries] When a reclaim would deliver an entry once more than this,
 *   move it to `deadLetterStream` and acknowledge it instead, atomically (default 0: no limit).
 * @property {string} [deadLetterStream] Where dead letters go (default `<stream>:dlq`): the
 *   original fields plus `dlq.stream`, `dlq.id`, `dlq.group`, `dlq.consumer`,
 *   `dlq.deliveries`, `dlq.reason`.
 * @property {number} [maxInFlight] Never hold more unacknowledged entries than this; reads pause
 *   until an ack makes room (default 0: no limit). Batches are read off the stream as they come
 *   (confirms travel on it too), so this also bounds the entries buffered in the client.
 * @property {number} [heartbeatMs] The gateway sends a heartbeat after this long without
 *   entries (unset: its `--heartbeat-ms`; 0: never). The iteration consumes heartbeats
 *   silently; `lastHeartbeat` holds the latest.
 * @property {(heartbeat: Heartbeat) => void} [onHeartbeat] Called with each heartbeat.
 * @property {number} [ackBatchSize] Send queued acks as one message at this many IDs
 *   (default 100) ...
 * @property {number} [ackDelayMs] ... or once the oldest waited this long (default 10), and on
 *   `close()`.
 * @property {number} [leaseMs] Every `leaseMs / 2` extend the entries this consumer holds
 *   (default 30000; 0: never). Keep it at or below the smallest reclaim `minIdleMs` (and Reap
 *   `minIdleMs`) used in the group.
 * @property {Backoff} [backoff] Reconnect backoff.
 */

/**
 * Reads a stream as `consumer` of `group`:
 * `for await (const entry of consumer) { ...; await consumer.ack(entry); }`.
 *
 * A gateway that cannot be reached at all is retried the same way, forever:
 * a consumer outlives gateway restarts and deploys. Errors other than the
 * reconnectable ones reject the iteration with a StreamgateError (e.g.
 * NOT_FOUND for a missing group without `createGroup`). `close()` ends the
 * iteration.
 */
export class Consumer {
  /**
   * @param {string | Client} addr Gateway address, or a Client to share.
   * @param {string} stream @param {string} group @param {string} consumer
   * @param {ConsumerOptions} [options]
   */
  constructor(addr, stream, group, consumer, options = {}) {
    this.ownsClient = !(addr instanceof Client);
    this.client = addr instanceof Client ? addr : new Client(addr);
    this.stream = stream;
    this.group = group;
    this.consumer = consumer;
    this.options = {
      createGroup: false, groupStartId: '$', batchSize: 0, pendingFirst: true,
      ackBatchSize: 100, ackDelayMs: 10, leaseMs: 30_000, ...options,
    };
    /** How many times the subscription was re-established. */
    this.reconnects = 0;
    /** Extend messages the lease keeper sent. */
    this.extensionsSent = 0;
    this.closed = false;
    /** Interrupts a backoff wait on close(). */
    this.abort = new AbortController();
    /** @type {any} the open Consume call */
    this.call = null;
    /** @type {Promise<void> | null} settles when the open call ended */
    this.callEnded = null;
    /** The most recent heartbeat, or null before the first one. @type {Heartbeat | null} */
    this.lastHeartbeat = null;
    /** Iterating: acks go in band. */
    this.streaming = false;
    /** @type {Op | null} queued acks, not yet a message */ this.acks = null;
    /** @type {NodeJS.Timeout | null} */ this.ackTimer = null;
    /** @type {Op[]} messages to send, in order */ this.outbox = [];
    /** @type {Op[]} sent, awaiting their Confirm */ this.sent = [];
    /** @type {Set<string>} delivered, not acked or nacked */ this.held = new Set();
  }

  /** Entries one by one. @returns {AsyncGenerator<Entry>} */
  async *[Symbol.asyncIterator]() {
    for await (const batch of this.batches()) yield* batch;
  }

  /**
   * Entries one gateway batch (one Redis read) at a time, which suits
   * processing and acknowledging in bulk.
   * @returns {AsyncGenerator<Entry[]>}
   */
  async *batches() {
    let pendingFirst = this.options.pendingFirst;
    const backoff = this.options.backoff ?? {};
    let wait = delays(backoff);
    this.streaming = true;
    try {
      while (!this.closed) {
        const started = Date.now();
        try {
          for await (const batch of this.consume(pendingFirst)) {
            wait = delays(backoff); // the connection works again
            yield batch;
          }
          if (this.closed) return;
          // An end without error is unexpected (the gateway ends every
          // subscription with a status): reconnect like after UNAVAILABLE.
        } catch (err) {
          if (this.closed) return;
          if (!(err instanceof StreamgateError) || !RECONNECT_CODES.has(err.code)) throw err;
        }
        // Our own unacknowledged entries first: they were delivered (or read
        // for us) on the lost subscription and are still ours.
        pendingFirst = true;
        if (Date.now() - started > (backoff.maxMs ?? 5000)) wait = delays(backoff); // it was up for a while: start over
        try {
          await sleep(wait.next().value, undefined, { signal: this.abort.signal });
        } catch {
          return; // closed while waiting
        }
        this.reconnects += 1;
      }
    } finally {
      this.streaming = false;
      this.failUnconfirmed('the consumer stopped before the gateway confirmed');
    }
  }

  /**
   * One Consume call: yields its batches and records heartbeats. Responses
   * are taken off the call as they arrive (flowing mode), so Confirms
   * resolve while a handler awaits them.
   * @param {boolean} pendingFirst @returns {AsyncGenerator<Entry[]>}
   */
  async *consume(pendingFirst) {
    const o = this.options;
    const inbox = new Inbox();
    const call = this.client.events.Consume();
    this.call = call;
    /** @type {(error: StreamgateError | null) => void} */
    let finish = () => {};
    this.callEnded = new Promise((resolve) => {
      let done = false;
      finish = (error) => {
        if (done) return;
        done = true;
        if (this.call === call) this.call = null;
        clearInterval(lease);
        // Unconfirmed messages go out again on the next call, first; lease
        // extensions are re-sent by the next call's own keeper.
        this.outbox.unshift(...this.sent.filter((op) => op.parts.length > 0));
        this.sent = [];
        inbox.push({ end: error });
        resolve();
      };
    });
    call.on('data', (/** @type {any} */ response) => {
      if (response.kind === 'batch') {
        const entries = response.batch.entries.map(toEntry);
        for (const e of entries) this.held.add(e.id);
        inbox.push({ batch: entries });
      } else if (response.kind === 'heartbeat') {
        inbox.push({ heartbeat: toHeartbeat(response.heartbeat) });
      } else if (response.kind === 'confirm') {
        this.sent.shift()?.confirm(response.confirm);
      }
    });
    call.on('error', (/** @type {any} */ err) => finish(StreamgateError.from(err)));
    call.on('status', (/** @type {any} */ s) => s.code === 0 && finish(null));
    call.write({
      open: {
        stream: this.stream,
        group: this.group,
        consumer: this.consumer,
        batchSize: o.batchSize,
        createGroup: o.createGroup,
        groupStartId: o.groupStartId,
        pendingFirst,
        reclaim: o.reclaim && { minIdleMs: o.reclaim.minIdleMs, intervalMs: o.reclaim.intervalMs ?? 0 },
        maxDeliveries: o.maxDeliveries ?? 0,
        deadLetterStream: o.deadLetterStream ?? '',
        maxInFlight: o.maxInFlight ?? 0,
        heartbeatMs: o.heartbeatMs, // unset: the gateway's default
      },
    });
    const lease = setInterval(() => {
      if (this.held.size === 0 || this.call !== call) return;
      const extend = new Op('extend');
      extend.ids.push(...this.held);
      this.outbox.push(extend);
      this.extensionsSent += 1;
      this.pump();
    }, o.leaseMs > 0 ? o.leaseMs / 2 : 2 ** 31 - 1);
    if (o.leaseMs <= 0) clearInterval(lease);
    this.pump(); // messages queued before this call (a reconnect) go first
    let finished = false;
    try {
      for (;;) {
        const item = await inbox.next();
        if ('batch' in item) {
          if (!this.closed) yield item.batch; // else not handed out: stays pending, comes again
        } else if ('heartbeat' in item) {
          this.lastHeartbeat = item.heartbeat;
          o.onHeartbeat?.(item.heartbeat);
        } else {
          finished = true;
          if (item.end) throw item.end;
          return;
        }
      }
    } finally {
      if (!finished) await this.endCall(call); // left early (break, close)
    }
  }

  /** Writes every queued message on the open call. */
  pump() {
    const call = this.call;
    if (!call || call.halfClosed) return;
    while (this.outbox.length > 0) {
      const op = /** @type {Op} */ (this.outbox.shift());
      this.sent.push(op);
      call.write(op.toRequest());
    }
  }

  /** Turns the queued acks into one message and writes it. */
  flushAcks() {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.acks) this.outbox.push(this.acks);
    this.acks = null;
    this.pump();
  }

  /**
   * Half-closes a call once queued acks are written, waits (up to
   * `timeoutMs`) for the gateway to confirm them and end it, then cancels.
   * @param {any} call @param {number} [timeoutMs] @returns {Promise<void>}
   */
  endCall(call, timeoutMs = 10_000) {
    // close() and the iteration may both end the same call: one wait.
    if (!call.ending) call.ending = this.endCallOnce(call, timeoutMs);
    return call.ending;
  }

  /** @param {any} call @param {number} timeoutMs */
  async endCallOnce(call, timeoutMs) {
    if (this.call === call && !call.halfClosed) {
      this.flushAcks();
      call.halfClosed = true;
      call.end();
      /** @type {NodeJS.Timeout | undefined} */ let timer;
      const expired = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs); });
      await Promise.race([this.callEnded, expired]);
      clearTimeout(timer);
    }
    call.cancel();
  }

  /** Fails every message not yet confirmed. @param {string} why */
  failUnconfirmed(why) {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const left = [...this.outbox, ...this.sent, ...(this.acks ? [this.acks] : [])];
    this.outbox = [];
    this.sent = [];
    this.acks = null;
    const error = new StreamgateError(14, why);
    for (const op of left) op.fail(error);
  }

  /**
   * Acknowledges one entry or many (entries or IDs); resolves to how many
   * were pending for this consumer, once the gateway confirms. Acknowledge
   * only after processing: an entry never acknowledged is re-delivered
   * (pendingFirst), reclaimed or reaped.
   *
   * While the consumer is iterating, acks are queued and sent in band in
   * batches; otherwise this is one Ack call (the count is then how many
   * were pending in the group).
   * @param {Entry | string | Array<Entry | string>} entries
   * @returns {Promise<number>}
   */
  async ack(entries) {
    const ids = idsOf(entries);
    for (const id of ids) this.held.delete(id);
    if (ids.length === 0) return 0;
    if (!this.streaming) return this.client.ack(this.stream, this.group, ids);
    if (!this.acks) {
      this.acks = new Op('ack');
      this.ackTimer = setTimeout(() => this.flushAcks(), this.options.ackDelayMs);
    }
    const promise = this.acks.add(ids);
    if (this.acks.ids.length >= this.options.ackBatchSize) this.flushAcks();
    return promise;
  }

  /**
   * Gives one entry or many back for re-delivery after `delayMs` (0: at the
   * next reclaim round), without acknowledging them. A reclaiming
   * subscription of the group (option `reclaim`, possibly this one) takes
   * them whatever its `minIdleMs`; each re-delivery counts towards
   * `maxDeliveries`. Resolves to how many were pending for this consumer.
   * @param {Entry | string | Array<Entry | string>} entries @param {number} [delayMs]
   * @returns {Promise<number>}
   */
  async nack(entries, delayMs = 0) {
    const ids = idsOf(entries);
    for (const id of ids) this.held.delete(id);
    if (ids.length === 0) return 0;
    if (!this.streaming) return this.client.nack(this.stream, this.group, this.consumer, ids, delayMs);
    return this.send(new Op('nack', delayMs), ids);
  }

  /**
   * Resets the idle time of one entry or many pending for this consumer,
   * without counting a delivery. The consumer already does so every
   * `leaseMs / 2` for the entries it holds; call it for other entries of
   * this consumer. Resolves to how many were extended.
   * @param {Entry | string | Array<Entry | string>} entries
   * @returns {Promise<number>}
   */
  async extend(entries) {
    const ids = idsOf(entries);
    if (ids.length === 0) return 0;
    if (!this.streaming) return this.client.extend(this.stream, this.group, this.consumer, ids);
    return this.send(new Op('extend'), ids);
  }

  /**
   * Queues a nack or extend message after the acks queued before it.
   * @param {Op} op @param {string[]} ids @returns {Promise<number>}
   */
  send(op, ids) {
    if (this.acks) this.outbox.push(this.acks);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.acks = null;
    this.ackTimer = null;
    const promise = op.add(ids);
    this.outbox.push(op);
    this.pump();
    return promise;
  }

  /**
   * Claims for this consumer the group's entries pending for at least
   * `minIdleMs` (e.g. of a crashed peer); process and `ack` them like
   * delivered entries.
   * @param {number} minIdleMs @param {{ pageCount?: number, maxPages?: number, startId?: string }} [options]
   * @returns {Promise<ReapResult>}
   */
  reap(minIdleMs, options) {
    return this.client.reap(this.stream, this.group, this.consumer, minIdleMs, options);
  }

  /**
   * Stops the subscription: queued acks, nacks and extensions are sent and
   * confirmed first (for up to 10 s; those still unconfirmed then reject with
   * UNAVAILABLE), then the stream ends and the connection closes unless the
   * client was shared. Unacknowledged entries stay pending.
   * @returns {Promise<void>}
   */
  async close() {
    this.closed = true;
    this.abort.abort();
    if (this.call) await this.endCall(this.call);
    this.failUnconfirmed('the consumer closed before the gateway confirmed');
    this.held.clear();
    if (this.ownsClient) this.client.close();
  }
}

/**
 * The IDs of one entry or ID, or of many.
 * @param {Entry | string | Array<Entry | string>} entries @returns {string[]}
 */
function idsOf(entries) {
  const list = Array.isArray(entries) ? entries : [entries];
  return list.map((e) => (typeof e === 'string' ? e : e.id));
}
