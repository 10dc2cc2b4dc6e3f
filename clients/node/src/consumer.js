// @ts-check
/**
 * `Consumer`: a consumer-group member that survives gateway restarts.
 *
 * Delivery is at-least-once. The gateway never acknowledges on the
 * consumer's behalf, so an entry is pending until `ack`. When a gateway shuts
 * down it ends every subscription with UNAVAILABLE; the consumer then
 * reconnects with capped exponential backoff and `pendingFirst`, so the
 * entries it had received (or the gateway had read for it) but not
 * acknowledged come first, followed by new ones. Such an entry may therefore
 * be seen twice: make processing idempotent, and check `redelivered` /
 * `deliveryCount` if that matters.
 *
 * With `reclaim` the subscription also recovers the work of crashed peers
 * (entries of the group idle for `minIdleMs`) and entries given back with
 * `nack`; `maxDeliveries` moves an entry that keeps failing to a dead-letter
 * stream instead of delivering it forever; `maxInFlight` bounds how many
 * unacknowledged entries this consumer holds.
 * @module
 */

import { setTimeout as sleep } from 'node:timers/promises';

import * as grpc from '@grpc/grpc-js';

import { Client, StreamgateError } from './client.js';
import { toEntry, toHeartbeat } from './model.js';

/** @typedef {import('./model.js').Entry} Entry */
/** @typedef {import('./model.js').Heartbeat} Heartbeat */
/** @typedef {import('./model.js').Reclaim} Reclaim */
/** @typedef {import('./model.js').ReapResult} ReapResult */

/**
 * Capped exponential backoff with jitter, in milliseconds. Jitter spreads
 * the reconnects of many consumers after a gateway restart.
 * @typedef {object} Backoff
 * @property {number} [initialMs] First wait (default 100).
 * @property {number} [maxMs] Cap (default 5000).
 * @property {number} [multiplier] Growth per failed attempt (default 2).
 * @property {number} [jitter] Fraction taken off at random (default 0.2).
 */

/**
 * Codes that end a subscription for a reason a retry can fix: the gateway
 * shut down or is unreachable (UNAVAILABLE), or its Redis timed out
 * (DEADLINE_EXCEEDED: Subscribe itself never carries a client deadline).
 */
export const RECONNECT_CODES = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

/** @param {Backoff} backoff @returns {Generator<number, never>} */
function* delays({ initialMs = 100, maxMs = 5000, multiplier = 2, jitter = 0.2 }) {
  for (let delay = initialMs; ; delay = Math.min(delay * multiplier, maxMs)) {
    yield delay * (1 - jitter * Math.random());
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
 *   until `ack` makes room (default 0: no limit).
 * @property {number} [heartbeatMs] The gateway sends a heartbeat after this long without
 *   entries (unset: its `--heartbeat-ms`; 0: never). The iteration consumes heartbeats
 *   silently; `lastHeartbeat` holds the latest.
 * @property {(heartbeat: Heartbeat) => void} [onHeartbeat] Called with each heartbeat.
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
    this.options = { createGroup: false, groupStartId: '$', batchSize: 0, pendingFirst: true, ...options };
    /** How many times the subscription was re-established. */
    this.reconnects = 0;
    this.closed = false;
    /** Interrupts a backoff wait on close(). */
    this.abort = new AbortController();
    /** @type {any} the open Subscribe call */
    this.call = null;
    /** The most recent heartbeat, or null before the first one. @type {Heartbeat | null} */
    this.lastHeartbeat = null;
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
    while (!this.closed) {
      const started = Date.now();
      try {
        for await (const batch of this.subscribe(pendingFirst)) {
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
  }

  /**
   * One Subscribe call; yields its batches and records heartbeats.
   * @param {boolean} pendingFirst @returns {AsyncGenerator<Entry[]>}
   */
  async *subscribe(pendingFirst) {
    const o = this.options;
    const call = this.client.events.Subscribe({
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
    });
    this.call = call;
    try {
      for await (const response of call) {
        if (response.kind === 'batch') {
          yield response.batch.entries.map(toEntry);
        } else if (response.kind === 'heartbeat') {
          this.lastHeartbeat = toHeartbeat(response.heartbeat);
          o.onHeartbeat?.(this.lastHeartbeat);
        }
      }
    } catch (err) {
      throw StreamgateError.from(err);
    } finally {
      this.call = null;
      call.cancel(); // leaving early (break, close) stops the gateway's reads
    }
  }

  /**
   * Acknowledges one entry or many (entries or IDs); resolves to how many
   * were pending. Acknowledge only after processing: an entry never
   * acknowledged is re-delivered (pendingFirst), reclaimed or reaped.
   * @param {Entry | string | Array<Entry | string>} entries
   * @returns {Promise<number>}
   */
  async ack(entries) {
    const ids = idsOf(entries);
    return ids.length === 0 ? 0 : this.client.ack(this.stream, this.group, ids);
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
    return ids.length === 0 ? 0 : this.client.nack(this.stream, this.group, this.consumer, ids, delayMs);
  }

  /**
   * Resets the idle time of one entry or many pending for this consumer,
   * without counting a delivery: call it during long work so that a
   * reclaiming peer does not take the entry over. Resolves to how many were
   * extended.
   * @param {Entry | string | Array<Entry | string>} entries
   * @returns {Promise<number>}
   */
  async extend(entries) {
    const ids = idsOf(entries);
    return ids.length === 0 ? 0 : this.client.extend(this.stream, this.group, this.consumer, ids);
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
   * Stops the subscription and closes the connection unless the client was
   * shared. Unacknowledged entries stay pending.
   */
  close() {
    this.closed = true;
    this.abort.abort();
    this.call?.cancel();
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
