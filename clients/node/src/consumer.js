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
 *
 * With `ordered: true` (a partitioned stream) each partition is owned by one
 * consumer of the group at a time, and the consumer keeps its acks in the
 * order it received each partition's entries (`Lines`), which is what the
 * gateway's ordering guarantee asks of it. `process(handler, { concurrency })`
 * runs a handler on up to `concurrency` entries at once, one partition's
 * entries one after the other (`Lanes`).
 * @module
 */

import { AsyncLocalStorage } from 'node:async_hooks';
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
 * The promise of one `ack` in ordered mode. Its IDs may go out in several
 * messages (each when its line lets it) or not at all (dropped after a nack:
 * they come again), so each ID is settled on its own; the promise resolves
 * to how many the gateway acknowledged once all are, or rejects with the
 * first failure.
 */
class Tally {
  /** @param {number} ids */
  constructor(ids) {
    this.left = ids;
    this.acked = 0;
    this.failed = false;
    /** @type {(n: number) => void} */ let resolve = () => {};
    /** @type {(err: Error) => void} */ let reject = () => {};
    /** @type {Promise<number>} */
    this.promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    this.resolve = resolve;
    this.reject = reject;
  }

  /** One ID is settled: `acked` is 0 or 1. @param {number} acked */
  settle(acked) {
    this.left -= 1;
    this.acked += acked;
    if (this.left === 0 && !this.failed) this.resolve(this.acked);
  }

  /** @param {Error} error */
  fail(error) {
    if (!this.failed) this.reject(error);
    this.failed = true;
  }

  /** One ID goes out in a message: `confirmed` is its part's promise. @param {Promise<number>} confirmed */
  part(confirmed) {
    confirmed.then((n) => this.settle(n), (err) => this.fail(err));
  }
}

/**
 * One delivery of an entry in ordered mode. `acked` is the ack's tally once
 * the application acked it; `dropped` is set when a nack of an earlier entry
 * of its partition gave it back.
 */
class Slot {
  /** @param {Entry} entry */
  constructor(entry) {
    this.entry = entry;
    /** @type {Tally | null} */ this.acked = null;
    this.dropped = false;
  }
}

/**
 * Ordered mode's bookkeeping: per partition, the *line* of entries this
 * consumer received and still holds, in the order received.
 *
 * The gateway guarantees that the group's first acks of one key's entries
 * happen in production order, provided every consumer acks each partition's
 * entries in the order it received them. Applications finish entries out of
 * order (handlers of different partitions run concurrently, a batch may be
 * acked backwards), so the consumer restores that order itself, with two
 * rules:
 *
 * 1. **Acks wait for the line.** An ack is held back until every entry
 *    received before it in its partition's line is acked too; then the acked
 *    front of the line goes out, in line order.
 * 2. **A nack cuts the line.** A nack of X makes the gateway re-deliver X and
 *    every later entry of its partition it delivered, in order, after X. So
 *    the entries received after X in its line are dropped: those not yet
 *    handed to the application never are, and their acks (given before the
 *    nack or after it) are not sent. They come again, after X.
 * 3. **A nack holds its partition until its Confirm.** Entries of the
 *    partition the gateway read before the nack took effect may still arrive
 *    after it was sent, as first deliveries. The gateway's contract
 *    (docs/ordered.md, "The guarantee", item 3) is that they all arrive
 *    before the nack's Confirm, and that what it reads after the nack follows
 *    the Confirm. So the entries of the partition that arrive while a nack of
 *    it is unconfirmed wait, outside the line; when the Confirm lists the
 *    nacked X as done, those from X on are dropped (the partition starts
 *    again at X: they come again, after it), and once no nack of the
 *    partition is unconfirmed the others join the line and are handed out.
 *    If X is not done (not pending any more, or the partition moved to
 *    another consumer), nothing comes again, so none is dropped.
 *
 * An entry that is in no line (never received, or its ack already went out)
 * is acked at once.
 */
class Lines {
  constructor() {
    /** @type {Map<number, Slot[]>} */ this.lines = new Map();
    /**
     * Every slot in a line, and dropped slots the application may still ack,
     * nack or be handed; a few per ID at most (re-deliveries).
     * @type {Map<string, Slot[]>}
     */
    this.byId = new Map();
    /**
     * Rule 3: per partition, the nacks sent (or queued) and not yet
     * confirmed, and the entries received meanwhile.
     * @type {Map<number, number>}
     */
    this.nacks = new Map();
    /** @type {Map<number, Entry[]>} */ this.waiting = new Map();
  }

  /**
   * Takes a received entry into its line; false if it waits for the Confirm
   * of a nack of its partition instead (rule 3).
   * @param {Entry} entry @returns {boolean}
   */
  receive(entry) {
    if (this.nacks.has(entry.partition)) {
      let waiting = this.waiting.get(entry.partition);
      if (!waiting) this.waiting.set(entry.partition, (waiting = []));
      waiting.push(entry);
      return false;
    }
    const slot = new Slot(entry);
    let line = this.lines.get(entry.partition);
    if (!line) this.lines.set(entry.partition, (line = []));
    line.push(slot);
    let slots = this.byId.get(entry.id);
    if (!slots) this.byId.set(entry.id, (slots = []));
    slots.push(slot);
    return true;
  }

  /**
   * Rule 3: a nack of `ids` is queued; their partitions wait for its Confirm.
   * @param {string[]} ids
   */
  nacking(ids) {
    const partitions = new Set(ids.map(positionOf).flatMap((at) => (at ? [at.partition] : [])));
    for (const p of partitions) this.nacks.set(p, (this.nacks.get(p) ?? 0) + 1);
  }

  /**
   * Rule 3: the Confirm of the nack of `ids` arrived. Drops the waiting
   * entries it gives back; returns those it releases, now in their lines, in
   * the order received.
   * @param {string[]} ids @param {Set<string>} done @returns {Entry[]}
   */
  confirmed(ids, done) {
    /** @type {Map<number, Array<[number, number]>>} partition -> done IDs' places */
    const doneIn = new Map();
    for (const id of ids) {
      const at = positionOf(id);
      if (!at) continue;
      let places = doneIn.get(at.partition);
      if (!places) doneIn.set(at.partition, (places = []));
      if (done.has(id)) places.push(at.place);
    }
    /** @type {Entry[]} */ const released = [];
    for (const [partition, places] of doneIn) {
      const waiting = this.waiting.get(partition) ?? [];
      if (places.length > 0) { // the partition starts again at the earliest one done
        const start = places.reduce((a, b) => (comparePlaces(a, b) <= 0 ? a : b));
        this.waiting.set(partition, waiting.filter((e) => comparePlaces(placeOf(e.id), start) < 0));
      }
      const left = (this.nacks.get(partition) ?? 1) - 1;
      if (left > 0) {
        this.nacks.set(partition, left);
        continue;
      }
      this.nacks.delete(partition);
      for (const entry of this.waiting.get(partition) ?? []) {
        this.receive(entry);
        released.push(entry);
      }
      this.waiting.delete(partition);
    }
    return released;
  }

  /**
   * The Consume call ended: the entries waiting for a Confirm are dropped
   * (pending for this consumer, the next call delivers them again first).
   * The unconfirmed nacks are sent again on it, and their partitions keep
   * waiting for them.
   */
  callEnded() {
    this.waiting.clear();
  }

  /**
   * The delivery an ack or nack of `item` is about: that very one for an
   * entry, the oldest not acked yet for an ID.
   * @param {Entry | string} item @returns {Slot | undefined}
   */
  find(item) {
    if (typeof item !== 'string') return this.byId.get(item.id)?.find((s) => s.entry === item);
    const slots = this.byId.get(item) ?? [];
    return slots.find((s) => !s.acked) ?? slots[0];
  }

  /**
   * Whether `entry` may be handed to the application: not when a nack
   * dropped it (rule 2).
   * @param {Entry} entry
   */
  handOut(entry) {
    const slot = this.find(entry);
    if (!slot?.dropped) return true;
    this.forget(slot);
    return false;
  }

  /**
   * Rule 1: marks `slot` acked and returns the slots whose acks are due now,
   * in line order (none while an earlier entry is not acked).
   * @param {Slot} slot @param {Tally} tally @returns {Slot[]}
   */
  ack(slot, tally) {
    if (slot.dropped) { // not acked: it comes again
      this.forget(slot);
      tally.settle(0);
      return [];
    }
    if (slot.acked) { // acked already: that ack goes out
      tally.settle(0);
      return [];
    }
    slot.acked = tally;
    const line = /** @type {Slot[]} */ (this.lines.get(slot.entry.partition));
    let n = 0;
    while (n < line.length && line[n].acked) this.forget(line[n++]);
    return line.splice(0, n);
  }

  /**
   * Rule 2: cuts the line at `slot`; returns the cut slots, the nacked one
   * first (none if it was dropped already: it comes again anyway, so its
   * nack is not sent).
   * @param {Slot} slot @returns {Slot[]}
   */
  nack(slot) {
    this.forget(slot);
    if (slot.dropped) return [];
    const line = /** @type {Slot[]} */ (this.lines.get(slot.entry.partition));
    const cut = line.splice(line.indexOf(slot));
    for (const later of cut) {
      if (later.acked) { // its ack is not sent: it comes again
        later.acked.settle(0);
        this.forget(later);
      } else if (later !== slot) {
        later.dropped = true; // forgotten once handed out or settled
      }
    }
    return cut;
  }

  /** Forgets everything; returns the slots whose acks were held back. */
  clear() {
    const held = [...this.lines.values()].flat().filter((s) => s.acked);
    this.lines.clear();
    this.byId.clear();
    this.nacks.clear();
    this.waiting.clear();
    return held;
  }

  /** @param {Slot} slot */
  forget(slot) {
    const slots = this.byId.get(slot.entry.id);
    const at = slots ? slots.indexOf(slot) : -1;
    if (!slots || at < 0) return;
    slots.splice(at, 1);
    if (slots.length === 0) this.byId.delete(slot.entry.id);
  }
}

/**
 * The entries waiting for `process`'s handlers, in lanes: one handler at a
 * time takes a lane's entries, one after the other, in order; different
 * lanes are handled concurrently. Ordered, a lane is a partition; unordered,
 * every entry is a lane of its own, handled as soon as a handler is free.
 */
class Lanes {
  /** @param {boolean} ordered */
  constructor(ordered) {
    this.ordered = ordered;
    /** @type {Map<number, Entry[]>} lane -> waiting entries */ this.queues = new Map();
    /** @type {number[]} lanes with entries and no handler */ this.ready = [];
    /** @type {Set<number>} lanes a handler holds */ this.busy = new Set();
    /** @type {Array<(job: [number, Entry] | null) => void>} handlers waiting for an entry */
    this.idle = [];
    /** Handlers running. */ this.running = 0;
    /** @type {Array<{ allowed: number, resolve: () => void }>} waiting for handlers to return */
    this.waiters = [];
    this.stopped = false;
    this.unique = 0;
  }

  /** @param {Entry[]} entries */
  put(entries) {
    if (this.stopped) return; // not handed out: stays pending, comes again
    for (const entry of entries) {
      const lane = this.ordered ? entry.partition : this.unique++;
      let waiting = this.queues.get(lane);
      if (!waiting) this.queues.set(lane, (waiting = []));
      if (waiting.length === 0 && !this.busy.has(lane)) this.ready.push(lane);
      waiting.push(entry);
    }
    while (this.idle.length > 0 && this.ready.length > 0) /** @type {any} */ (this.idle.shift())(this.next());
  }

  /**
   * The next entry of a lane no handler holds (waits for one), now held by
   * the caller; null once stopped.
   * @returns {Promise<[number, Entry] | null>}
   */
  take() {
    if (this.stopped) return Promise.resolve(null);
    if (this.ready.length > 0) return Promise.resolve(this.next());
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** @returns {[number, Entry]} */
  next() {
    const lane = /** @type {number} */ (this.ready.shift());
    this.busy.add(lane);
    this.running += 1;
    return [lane, /** @type {Entry} */ (this.queues.get(lane)?.shift())];
  }

  /** The caller is done with its entry of `lane`. @param {number} lane */
  done(lane) {
    this.busy.delete(lane);
    this.running -= 1;
    if (this.queues.get(lane)?.length) this.ready.push(lane); // at the back: lanes take turns
    else this.queues.delete(lane);
    this.waiters = this.waiters.filter((w) => (this.running <= w.allowed ? (w.resolve(), false) : true));
    while (this.idle.length > 0 && this.ready.length > 0) /** @type {any} */ (this.idle.shift())(this.next());
  }

  /**
   * Hands nothing out any more, then waits up to `timeoutMs` until at most
   * `allowed` handlers run (1 when called from a handler: itself).
   * @param {number} [allowed] @param {number} [timeoutMs] @returns {Promise<void>}
   */
  async stop(allowed = 0, timeoutMs = 0) {
    this.stopped = true;
    for (const resolve of this.idle.splice(0)) resolve(null);
    if (this.running <= allowed || timeoutMs <= 0) return;
    /** @type {NodeJS.Timeout | undefined} */ let timer;
    await new Promise((resolve) => {
      this.waiters.push({ allowed, resolve: () => resolve(undefined) });
      timer = setTimeout(resolve, timeoutMs);
    });
    clearTimeout(timer);
  }
}

/** Which `Lanes` the current handler call belongs to (close() from a handler does not wait for it). */
const insideHandler = new AsyncLocalStorage();

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
 * @property {boolean} [ordered] Ordered consumption (a partitioned stream only;
 *   INVALID_ARGUMENT on a plain one): each partition is owned by one ordered consumer of the
 *   group at a time and re-delivered from its oldest pending entry when it changes hands
 *   (`pendingFirst` is implied). The consumer sends each partition's acks in the order it
 *   received the entries, holding an ack back until the earlier ones are acked; a `nack` drops
 *   the later entries of its partition (not yet handed out, or acked), and those that arrive
 *   before its Confirm, because the gateway delivers them again after the nacked one. So ack or
 *   nack every entry you receive; `process` does that for you.
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
      ackBatchSize: 100, ackDelayMs: 10, leaseMs: 30_000, ordered: false, ...options,
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
    /** Ordered mode: acks in the order received. */ this.lines = new Lines();
    /** @type {Lanes | null} process()'s, while it runs */ this.lanes = null;
  }

  /** Entries one by one. @returns {AsyncGenerator<Entry>} */
  async *[Symbol.asyncIterator]() {
    for await (const batch of this.received()) {
      for (const entry of batch) if (this.handOut(entry)) yield entry;
    }
  }

  /**
   * Entries one gateway batch (one Redis read) at a time, which suits
   * processing and acknowledging in bulk.
   * @returns {AsyncGenerator<Entry[]>}
   */
  async *batches() {
    for await (const batch of this.received()) {
      const handed = batch.filter((e) => this.handOut(e));
      if (handed.length > 0) yield handed;
    }
  }

  /**
   * Runs `handler` on every entry, up to `concurrency` at once, until
   * `close()`: when it resolves the entry is acked, when it throws (or
   * rejects) the entry is nacked (re-delivered after `nackDelayMs`) and
   * `onError(error, entry)` is called.
   *
   * Ordered, one partition's entries are handled one after the other, in the
   * order received, and different partitions concurrently; after a failure
   * the entry and the later ones of its partition come again, in order.
   * Unordered, entries are handled concurrently as they come, with no order
   * among them.
   *
   * `close()` hands out nothing more and waits for the running handlers to
   * settle (but the calling one), so their acks go out; entries not handed
   * out stay pending and come again. Resolves once closed and the handlers
   * settled; errors other than the reconnectable ones reject it.
   * @param {(entry: Entry) => unknown} handler
   * @param {{ concurrency?: number, nackDelayMs?: number,
   *   onError?: (error: unknown, entry: Entry) => void }} [options]
   * @returns {Promise<void>}
   */
  async process(handler, { concurrency = 1, nackDelayMs = 0, onError } = {}) {
    if (!(concurrency >= 1)) throw new RangeError('concurrency must be at least 1');
    const lanes = new Lanes(this.options.ordered);
    this.lanes = lanes;
    const handlers = Array.from({ length: concurrency }, () => this.work(lanes, handler, nackDelayMs, onError));
    try {
      for await (const batch of this.received()) lanes.put(batch);
    } finally {
      lanes.stop();
      await Promise.all(handlers);
      this.lanes = null;
    }
  }

  /**
   * One handler of `process`: takes an entry of a lane no other handler
   * holds, hands it to `handler`, acks or nacks it.
   * @param {Lanes} lanes @param {(entry: Entry) => unknown} handler @param {number} nackDelayMs
   * @param {((error: unknown, entry: Entry) => void) | undefined} onError
   */
  async work(lanes, handler, nackDelayMs, onError) {
    for (let job = await lanes.take(); job; job = await lanes.take()) {
      const [lane, entry] = job;
      try {
        if (!this.handOut(entry)) continue; // dropped by a nack: comes again
        let failed = false;
        try {
          await insideHandler.run(lanes, () => handler(entry));
        } catch (err) {
          failed = true;
          onError?.(err, entry);
        }
        // A failed ack or nack leaves the entry pending: it comes again.
        (failed ? this.nack(entry, nackDelayMs) : this.ack(entry)).catch(() => {});
      } finally {
        lanes.done(lane);
      }
    }
  }

  /**
   * Whether a received entry goes to the application: not when a nack
   * dropped it (ordered mode).
   * @param {Entry} entry
   */
  handOut(entry) {
    return !this.options.ordered || this.lines.handOut(entry);
  }

  /**
   * Every batch received, over reconnects: what the iterations and `process`
   * hand out.
   * @returns {AsyncGenerator<Entry[]>}
   */
  async *received() {
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
        this.lines.callEnded();
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
        /** @type {Entry[]} */ let entries = response.batch.entries.map(toEntry);
        if (o.ordered) entries = entries.filter((e) => this.lines.receive(e)); // some may wait for a nack's Confirm
        for (const e of entries) this.held.add(e.id);
        if (entries.length > 0) inbox.push({ batch: entries });
      } else if (response.kind === 'heartbeat') {
        inbox.push({ heartbeat: toHeartbeat(response.heartbeat) });
      } else if (response.kind === 'confirm') {
        const op = this.sent.shift();
        op?.confirm(response.confirm);
        if (op?.kind === 'nack' && o.ordered) {
          const released = this.lines.confirmed(op.ids, new Set(response.confirm.done));
          for (const e of released) this.held.add(e.id);
          if (released.length > 0) inbox.push({ batch: released });
        }
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
        ordered: o.ordered,
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

  /**
   * Fails every message not yet confirmed, and the acks held back in
   * ordered mode. @param {string} why
   */
  failUnconfirmed(why) {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const left = [...this.outbox, ...this.sent, ...(this.acks ? [this.acks] : [])];
    this.outbox = [];
    this.sent = [];
    this.acks = null;
    const error = new StreamgateError(14, why);
    for (const op of left) op.fail(error);
    for (const slot of this.lines.clear()) slot.acked?.fail(error);
  }

  /**
   * Adds acks to the next ack message; resolves with its Confirm.
   * @param {string[]} ids @returns {Promise<number>}
   */
  queueAck(ids) {
    for (const id of ids) this.held.delete(id);
    if (!this.acks) {
      this.acks = new Op('ack');
      this.ackTimer = setTimeout(() => this.flushAcks(), this.options.ackDelayMs);
    }
    const promise = this.acks.add(ids);
    if (this.acks.ids.length >= this.options.ackBatchSize) this.flushAcks();
    return promise;
  }

  /**
   * Acknowledges one entry or many (entries or IDs); resolves to how many
   * were pending for this consumer, once the gateway confirms. Acknowledge
   * only after processing: an entry never acknowledged is re-delivered
   * (pendingFirst), reclaimed or reaped.
   *
   * While the consumer is iterating, acks are queued and sent in band in
   * batches; otherwise this is one Ack call (the count is then how many
   * were pending in the group). Ordered, an ack also waits until the entries
   * received before it in its partition are acked (see `Lines`); an entry a
   * nack dropped counts 0 and is not acked.
   * @param {Entry | string | Array<Entry | string>} entries
   * @returns {Promise<number>}
   */
  async ack(entries) {
    const items = listOf(entries);
    const ids = items.map(idOf);
    if (ids.length === 0) return 0;
    if (!this.streaming) {
      for (const id of ids) this.held.delete(id);
      return this.client.ack(this.stream, this.group, ids);
    }
    if (!this.options.ordered) return this.queueAck(ids);
    const tally = new Tally(items.length);
    for (const item of items) {
      const slot = this.lines.find(item);
      if (!slot) { // not in a line: nothing to wait for
        tally.part(this.queueAck([idOf(item)]));
        continue;
      }
      for (const due of this.lines.ack(slot, tally)) due.acked?.part(this.queueAck([due.entry.id]));
    }
    return tally.promise;
  }

  /**
   * Gives one entry or many back for re-delivery after `delayMs` (0: at the
   * next reclaim round), without acknowledging them. A reclaiming
   * subscription of the group (option `reclaim`, possibly this one) takes
   * them whatever its `minIdleMs`; each re-delivery counts towards
   * `maxDeliveries`. Resolves to how many were pending for this consumer.
   *
   * Ordered, the gateway re-delivers the entry and every later one of its
   * partition not acked yet, in order, after the delay (holding the
   * partition back meanwhile); the consumer drops those later entries, and
   * holds back the entries of the partition that arrive before the nack's
   * Confirm (see `Lines`). An entry dropped that way is not nacked (it
   * counts 0): it comes again anyway.
   * @param {Entry | string | Array<Entry | string>} entries @param {number} [delayMs]
   * @returns {Promise<number>}
   */
  async nack(entries, delayMs = 0) {
    const items = listOf(entries);
    let ids = items.map(idOf);
    for (const id of ids) this.held.delete(id);
    if (ids.length === 0) return 0;
    if (!this.streaming) return this.client.nack(this.stream, this.group, this.consumer, ids, delayMs);
    if (this.options.ordered) {
      ids = ids.filter((_, i) => this.cut(items[i]));
      if (ids.length === 0) return 0;
      this.lines.nacking(ids); // its partitions wait for its Confirm (Lines, rule 3)
    }
    return this.send(new Op('nack', delayMs), ids);
  }

  /**
   * Ordered mode: gives a nacked entry's delivery and the later ones of its
   * partition back; whether its nack is to be sent.
   * @param {Entry | string} item
   */
  cut(item) {
    const slot = this.lines.find(item);
    if (!slot) return true;
    const cut = this.lines.nack(slot);
    for (const givenBack of cut) this.held.delete(givenBack.entry.id);
    return cut.length > 0;
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
    const ids = listOf(entries).map(idOf);
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
   * client was shared. Unacknowledged entries stay pending. Under `process`
   * it first hands nothing out any more and waits (up to 10 s) for the
   * running handlers but the calling one to settle.
   * @returns {Promise<void>}
   */
  async close() {
    const lanes = this.lanes;
    if (lanes) await lanes.stop(insideHandler.getStore() === lanes ? 1 : 0, 10_000);
    this.closed = true;
    this.abort.abort();
    if (this.call) await this.endCall(this.call);
    this.failUnconfirmed('the consumer closed before the gateway confirmed');
    this.held.clear();
    if (this.ownsClient) this.client.close();
  }
}

/**
 * One entry or ID, or many, as an array.
 * @param {Entry | string | Array<Entry | string>} entries @returns {Array<Entry | string>}
 */
function listOf(entries) {
  return Array.isArray(entries) ? entries : [entries];
}

/** @param {Entry | string} item @returns {string} */
function idOf(item) {
  return typeof item === 'string' ? item : item.id;
}

/**
 * The partition of a qualified ID `<partition>/<ms>-<seq>` and its place in
 * it, `[ms, seq]`; null for anything else.
 * @param {string} id @returns {{ partition: number, place: [number, number] } | null}
 */
function positionOf(id) {
  const m = /^(\d+)\/(\d+)-(\d+)$/.exec(id);
  return m ? { partition: Number(m[1]), place: [Number(m[2]), Number(m[3])] } : null;
}

/** The `[ms, seq]` of a qualified ID, for comparisons within its partition. @param {string} id @returns {[number, number]} */
function placeOf(id) {
  return positionOf(id)?.place ?? [-1, -1];
}

/** @param {[number, number]} a @param {[number, number]} b */
function comparePlaces(a, b) {
  return a[0] - b[0] || a[1] - b[1];
}
