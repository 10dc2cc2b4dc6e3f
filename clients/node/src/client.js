// @ts-check
/**
 * `Client`: every RPC of the gateway as an async method, and `Producer`.
 * @module
 */

import * as grpc from '@grpc/grpc-js';

import { StreamgateError } from './errors.js';
import {
  toConsumerInfo, toEntry, toGroupInfo, toPartitionInfo, toPendingEntry, toStreamInfo, toStreamSummary,
} from './model.js';
import { loadServices } from './proto.js';
import { Publisher } from './publisher.js';
import { Tail } from './tail.js';

export { StreamgateError };

/** @typedef {import('./model.js').Entry} Entry */
/** @typedef {import('./model.js').Event} Event */
/** @typedef {import('./model.js').ReapResult} ReapResult */
/** @typedef {import('./model.js').StreamInfo} StreamInfo */
/** @typedef {import('./model.js').StreamSummary} StreamSummary */
/** @typedef {import('./model.js').GroupInfo} GroupInfo */
/** @typedef {import('./model.js').ConsumerInfo} ConsumerInfo */
/** @typedef {import('./model.js').PendingEntry} PendingEntry */
/** @typedef {import('./model.js').PartitionInfo} PartitionInfo */
/** @typedef {import('./model.js').Heartbeat} Heartbeat */
/** @typedef {import('./publisher.js').BatchSettings} BatchSettings */
/** @typedef {import('./backoff.js').Backoff} Backoff */

/**
 * gRPC channel options for long-lived subscriptions. grpc's reconnect
 * backoff grows to 120 s by default; capping it keeps the channel in step
 * with the Consumer's own backoff, so a restarted gateway is found within
 * seconds. Keepalive pings detect a gateway that vanished without closing
 * the connection, which a silent subscription would otherwise never notice.
 * @param {number} [maxReconnectBackoffMs]
 * @returns {grpc.ChannelOptions}
 */
export function channelOptions(maxReconnectBackoffMs = 5000) {
  return {
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': maxReconnectBackoffMs,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  };
}

/** @param {Event} e */
function eventMessage(e) {
  return {
    type: e.type,
    fields: e.fields ?? {},
    binaryFields: e.binaryFields ?? {},
    idempotencyKey: e.idempotencyKey ?? '',
    key: e.key ?? '',
  };
}

/**
 * A connection to one gateway (`host:port`, plaintext). Both services share
 * one channel, i.e. one HTTP/2 connection; share a Client rather than
 * opening one per call. Unary calls time out after `timeoutMs`. Every
 * method rejects with a StreamgateError on failure.
 */
export class Client {
  /**
   * @param {string} addr
   * @param {{ timeoutMs?: number, channelOptions?: grpc.ChannelOptions }} [options]
   */
  constructor(addr, { timeoutMs = 30_000, channelOptions: options = channelOptions() } = {}) {
    const { EventStream, StreamAdmin } = loadServices();
    const credentials = grpc.credentials.createInsecure();
    this.addr = addr;
    this.timeoutMs = timeoutMs;
    /** The EventStream stub, for calls this class does not wrap. @type {any} */
    this.events = new EventStream(addr, credentials, options);
    /** The StreamAdmin stub, on the same channel. @type {any} */
    this.admin = new StreamAdmin(addr, credentials, {
      ...options,
      channelOverride: this.events.getChannel(),
    });
  }

  /** Closes the channel, cancelling open calls. */
  close() {
    this.events.close();
  }

  /**
   * One unary call as a promise.
   * @param {any} stub @param {string} method @param {object} request
   * @returns {Promise<any>}
   */
  unary(stub, method, request) {
    const deadline = Date.now() + this.timeoutMs;
    return new Promise((resolve, reject) => {
      stub[method](request, { deadline }, (/** @type {any} */ err, /** @type {any} */ reply) =>
        err ? reject(StreamgateError.from(err)) : resolve(reply),
      );
    });
  }

  // -- EventStream --------------------------------------------------------

  /**
   * Appends one event; resolves to its stream ID. With an `idempotencyKey`,
   * a retry (after a timeout, say) writes nothing and resolves to the ID of
   * the first call, as long as the key was produced to this stream within
   * the gateway's `--dedup-window-ms`. `key` is the event's partition key
   * (see `Event.key`).
   * @param {string} stream @param {string} type @param {Record<string, string>} [fields]
   * @param {{ binaryFields?: Record<string, Uint8Array>, idempotencyKey?: string, key?: string, maxLen?: number, exact?: boolean }} [options]
   * @returns {Promise<string>}
   */
  async produce(stream, type, fields = {}, { binaryFields = {}, idempotencyKey = '', key = '', ...cap } = {}) {
    const [id] = await this.produceBatch(stream, [{ type, fields, binaryFields, idempotencyKey, key }], cap);
    return id;
  }

  /**
   * Appends events in one round trip; resolves to their IDs in order.
   * `maxLen` caps the stream length (approximately unless `exact`); unset
   * uses the gateway's `--max-len`, 0 disables the cap.
   * @param {string} stream @param {Event[]} events
   * @param {{ maxLen?: number, exact?: boolean }} [options]
   * @returns {Promise<string[]>}
   */
  async produceBatch(stream, events, { maxLen, exact = false } = {}) {
    const request = { stream, events: events.map(eventMessage), maxLen, exact };
    return (await this.unary(this.events, 'Produce', request)).ids;
  }

  /**
   * Acknowledges entries; resolves to how many were pending.
   * @param {string} stream @param {string} group @param {string[]} ids
   * @returns {Promise<number>}
   */
  async ack(stream, group, ids) {
    return (await this.unary(this.events, 'Ack', { stream, group, ids })).acked;
  }

  /**
   * Gives entries pending for `consumer` back without acknowledging them:
   * after `delayMs` (0: at once) the next reclaiming subscription of the
   * group (Consumer option `reclaim`) re-delivers them, whatever its
   * `minIdleMs`. Resolves to how many were pending for `consumer` (others
   * are ignored).
   * @param {string} stream @param {string} group @param {string} consumer @param {string[]} ids
   * @param {number} [delayMs]
   * @returns {Promise<number>}
   */
  async nack(stream, group, consumer, ids, delayMs = 0) {
    return (await this.unary(this.events, 'Nack', { stream, group, consumer, ids, delayMs })).scheduled;
  }

  /**
   * Resets the idle time of entries pending for `consumer` without counting
   * a delivery, so that long work is not reclaimed under a live worker.
   * Resolves to how many were pending for `consumer` and extended.
   * @param {string} stream @param {string} group @param {string} consumer @param {string[]} ids
   * @returns {Promise<number>}
   */
  async extend(stream, group, consumer, ids) {
    return (await this.unary(this.events, 'Extend', { stream, group, consumer, ids })).extended;
  }

  /**
   * Claims entries pending for at least `minIdleMs` (typically of a crashed
   * consumer) for `consumer`. Each claimed entry carries its delivery count
   * after the claim; acknowledge it once processed.
   * @param {string} stream @param {string} group @param {string} consumer @param {number} minIdleMs
   * @param {{ pageCount?: number, maxPages?: number, startId?: string }} [options]
   * @returns {Promise<ReapResult>}
   */
  async reap(stream, group, consumer, minIdleMs, { pageCount = 0, maxPages = 0, startId = '' } = {}) {
    const request = { stream, group, consumer, minIdleMs, pageCount, maxPages, startId };
    const reply = await this.unary(this.events, 'Reap', request);
    return {
      claimed: reply.claimed.map(toEntry),
      deletedIds: reply.deletedIds,
      nextStartId: reply.nextStartId,
    };
  }

  /**
   * Yields history between `start` and `end` (inclusive IDs or millisecond
   * timestamps), oldest first unless `reverse`; `limit` 0 means all. No
   * consumer group is involved. Leaving the loop early cancels the call.
   * @param {string} stream
   * @param {{ start?: string, end?: string, limit?: number, reverse?: boolean, pageSize?: number }} [options]
   * @returns {AsyncGenerator<Entry>}
   */
  async *replay(stream, { start = '-', end = '+', limit = 0, reverse = false, pageSize = 0 } = {}) {
    const call = this.events.Replay({ stream, start, end, limit, reverse, pageSize });
    try {
      for await (const page of call) yield* page.entries.map(toEntry);
    } catch (err) {
      throw StreamgateError.from(err);
    } finally {
      call.cancel();
    }
  }

  /**
   * Removes old entries, keeping the newest `maxLen` or those with IDs from
   * `minId` on (give exactly one). Approximate (cheap, whole macro nodes
   * only) unless `exact`. Resolves to how many were removed.
   *
   * With `ackedByAllGroups` only entries that every consumer group has
   * delivered and acknowledged are removed, so retention never destroys
   * unprocessed work; `maxLen: 0` then removes everything that is safe to
   * remove.
   * @param {string} stream
   * @param {{ maxLen?: number, minId?: string, exact?: boolean, limit?: number, ackedByAllGroups?: boolean }} options
   * @returns {Promise<number>}
   */
  async trim(stream, { maxLen, minId, exact = false, limit = 0, ackedByAllGroups = false }) {
    if ((maxLen === undefined) === (minId === undefined)) {
      throw new TypeError('give exactly one of maxLen and minId');
    }
    const request = { stream, maxLen, minId, exact, limit, ackedByAllGroups };
    return (await this.unary(this.events, 'Trim', request)).trimmed;
  }

  /**
   * Follows `stream` live, outside any group: resolves, once the gateway
   * has set the read up, to a Tail that yields the entries appended after
   * `startId` (`$`, the default: from now on; `0`: the whole stream first;
   * or an ID). `heartbeatMs` (unset: the gateway's default, 0: never) is
   * how long the gateway waits before a keep-alive; heartbeats are consumed
   * silently (see `tail.lastHeartbeat`, `onHeartbeat`). `close()` the tail
   * when done.
   * @param {string} stream
   * @param {{ startId?: string, batchSize?: number, heartbeatMs?: number,
   *   onHeartbeat?: (heartbeat: Heartbeat) => void }} [options]
   * @returns {Promise<Tail>}
   */
  async tail(stream, { startId = '$', batchSize = 0, heartbeatMs, onHeartbeat } = {}) {
    const tail = new Tail(this.events.Tail({ stream, startId, batchSize, heartbeatMs }), onHeartbeat);
    try {
      await tail.ready;
    } catch (err) {
      tail.close();
      throw err;
    }
    return tail;
  }

  // -- StreamAdmin --------------------------------------------------------

  /**
   * Creates a stream: partitioned with `partitions` >= 2 (entry IDs are then
   * `<partition>/<ms>-<seq>` and an event's `key` picks its partition), plain
   * with 0 or 1. Resolves to false if it existed with this count; another
   * count is FAILED_PRECONDITION (it cannot change).
   * @param {string} stream @param {number} [partitions] @returns {Promise<boolean>}
   */
  async createStream(stream, partitions = 0) {
    return (await this.unary(this.admin, 'CreateStream', { stream, partitions })).created;
  }

  /**
   * The stream's partitions in order (a plain stream lists as one, partition
   * 0); with `group`, each one's ordered owner, pending count and lag in it.
   * @param {string} stream @param {string} [group] @returns {Promise<PartitionInfo[]>}
   */
  async listPartitions(stream, group = '') {
    return (await this.unary(this.admin, 'ListPartitions', { stream, group })).partitions.map(toPartitionInfo);
  }

  /**
   * Creates a consumer group starting after `startId` (`$`: only new
   * entries, `0`: the whole stream). Resolves to false if it existed.
   * @param {string} stream @param {string} group @param {string} [startId]
   * @param {{ mkstream?: boolean }} [options]
   * @returns {Promise<boolean>}
   */
  async createGroup(stream, group, startId = '$', { mkstream = true } = {}) {
    return (await this.unary(this.admin, 'CreateGroup', { stream, group, startId, mkstream })).created;
  }

  /**
   * Deletes a group and its pending entries list; false if it did not exist.
   * @param {string} stream @param {string} group @returns {Promise<boolean>}
   */
  async deleteGroup(stream, group) {
    return (await this.unary(this.admin, 'DeleteGroup', { stream, group })).deleted;
  }

  /**
   * Moves the group's last-delivered ID (re-process or skip entries).
   * @param {string} stream @param {string} group @param {string} id @returns {Promise<void>}
   */
  async setGroupCursor(stream, group, id) {
    await this.unary(this.admin, 'SetGroupCursor', { stream, group, id });
  }

  /**
   * Length, ID bounds and group count; NOT_FOUND if the stream does not exist.
   * @param {string} stream @returns {Promise<StreamInfo>}
   */
  async describeStream(stream) {
    return toStreamInfo(await this.unary(this.admin, 'DescribeStream', { stream }));
  }

  /**
   * Every stream under the gateway's key prefix that this caller may inspect
   * (`admin`), unsorted; follows ListStreams' pages (`pageLimit` streams per
   * call, 0 = the gateway's default).
   * @param {{ pageLimit?: number }} [options] @returns {Promise<StreamSummary[]>}
   */
  async listStreams({ pageLimit = 0 } = {}) {
    /** @type {StreamSummary[]} */
    const streams = [];
    let cursor = '';
    for (;;) {
      const reply = await this.unary(this.admin, 'ListStreams', { cursor, limit: pageLimit });
      streams.push(...reply.streams.map(toStreamSummary));
      if (!reply.nextCursor) return streams;
      cursor = reply.nextCursor;
    }
  }

  /**
   * The stream's consumer groups with pending counts and lag.
   * @param {string} stream @returns {Promise<GroupInfo[]>}
   */
  async listGroups(stream) {
    return (await this.unary(this.admin, 'ListGroups', { stream })).groups.map(toGroupInfo);
  }

  /**
   * The group's consumers with pending counts and idle times.
   * @param {string} stream @param {string} group @returns {Promise<ConsumerInfo[]>}
   */
  async listConsumers(stream, group) {
    const reply = await this.unary(this.admin, 'ListConsumers', { stream, group });
    return reply.consumers.map(toConsumerInfo);
  }

  /**
   * The group's unacknowledged entries (optionally one consumer's, or only
   * those idle for `minIdleMs`), at most `count` (0 = 100).
   * @param {string} stream @param {string} group
   * @param {{ consumer?: string, minIdleMs?: number, start?: string, end?: string, count?: number }} [options]
   * @returns {Promise<PendingEntry[]>}
   */
  async listPending(stream, group, { consumer, minIdleMs = 0, start = '-', end = '+', count = 0 } = {}) {
    const request = { stream, group, consumer, minIdleMs, start, end, count };
    return (await this.unary(this.admin, 'ListPending', request)).entries.map(toPendingEntry);
  }

  /**
   * Removes a consumer, first handing its pending entries to `handoverTo`.
   * Without `handoverTo`, a consumer with pending entries is refused
   * (FAILED_PRECONDITION) rather than losing them.
   * @param {string} stream @param {string} group @param {string} consumer @param {string} [handoverTo]
   * @returns {Promise<{ removed: boolean, handedOver: number }>}
   */
  async removeConsumer(stream, group, consumer, handoverTo = '') {
    const reply = await this.unary(this.admin, 'RemoveConsumer', { stream, group, consumer, handoverTo });
    return { removed: reply.removed, handedOver: reply.handedOver };
  }
}

/**
 * Appends events to streams.
 *
 * `publish(stream, event)` is the fast path: it resolves to the event's ID
 * and batches events over one long-lived ProduceStream (`batch`: by default
 * a request per 100 events, 1 MiB or 10 ms, whichever comes first).
 * `flush()` sends what is buffered and waits for the answers; `close()`
 * flushes too. `produce` and `produceBatch` are plain unary calls.
 *
 * A publish rejects with a StreamgateError carrying the gateway's code and
 * message when the request it was batched into is refused: one bad event
 * fails the events batched with it, not the others. A broken stream
 * (gateway restart) is reopened with `backoff` and the unanswered requests
 * are sent again; events without an `idempotencyKey` may then be appended
 * twice (at-least-once).
 *
 * Takes an address or a shared Client; everything else a producer may need
 * (`trim`, `describeStream`) is on `producer.client`.
 */
export class Producer {
  /**
   * @param {string | Client} addr
   * @param {{ batch?: BatchSettings, backoff?: Backoff, closeTimeoutMs?: number }} [options]
   *   `closeTimeoutMs` (default 30000): how long `close()` waits for answers.
   */
  constructor(addr, { batch = {}, backoff = {}, closeTimeoutMs = 30_000 } = {}) {
    this.ownsClient = !(addr instanceof Client);
    this.client = addr instanceof Client ? addr : new Client(addr);
    this.closeTimeoutMs = closeTimeoutMs;
    /** The batching ProduceStream behind `publish` (`requestsSent`, `streamsOpened` count what it did). */
    this.publisher = new Publisher(this.client.events, batch, backoff);
  }

  /**
   * Queues one event for `stream`; resolves to its ID once the batch it
   * joined is appended. IDs of one stream come in publish order.
   * @param {string} stream @param {Event} event
   * @returns {Promise<string>}
   */
  publish(stream, event) {
    return this.publisher.publish(stream, eventMessage(event));
  }

  /**
   * Sends every buffered event now; resolves once all publishes so far are
   * answered (failed publishes reject their own promises, not this one).
   * @returns {Promise<void>}
   */
  flush() {
    return this.publisher.flush();
  }

  /**
   * Appends one event; resolves to its stream ID. A retry with the same
   * `idempotencyKey` resolves to the first ID and writes nothing. `key` is
   * the event's partition key (see `Event.key`).
   * @param {string} stream @param {string} type @param {Record<string, string>} [fields]
   * @param {{ binaryFields?: Record<string, Uint8Array>, idempotencyKey?: string, key?: string, maxLen?: number }} [options]
   */
  produce(stream, type, fields, options) {
    return this.client.produce(stream, type, fields, options);
  }

  /**
   * Appends events in one round trip; resolves to their IDs in order.
   * @param {string} stream @param {Event[]} events @param {{ maxLen?: number }} [options]
   */
  produceBatch(stream, events, options) {
    return this.client.produceBatch(stream, events, options);
  }

  /**
   * Flushes (waiting up to `closeTimeoutMs` for the answers; what is still
   * unanswered then fails with UNAVAILABLE), ends the stream and closes the
   * connection unless the client was shared.
   * @returns {Promise<void>}
   */
  async close() {
    await this.publisher.close(this.closeTimeoutMs);
    if (this.ownsClient) this.client.close();
  }
}
