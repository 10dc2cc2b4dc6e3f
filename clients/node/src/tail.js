// @ts-check
/**
 * `Tail`: follow a stream live, outside any consumer group.
 *
 * A tail is a plain XREAD: nothing is pending and nothing is acknowledged,
 * so it suits dashboards and `tail -f`-style tools, not work that must be
 * done once. Heartbeats are consumed here; `lastHeartbeat` and
 * `onHeartbeat` make them observable.
 * @module
 */

import { StreamgateError } from './errors.js';
import { toEntry, toHeartbeat } from './model.js';

/** @typedef {import('./model.js').Entry} Entry */
/** @typedef {import('./model.js').Heartbeat} Heartbeat */

/**
 * Entries of a stream as they are appended:
 * `const tail = await client.tail(stream); for await (const entry of tail) ...`.
 *
 * `client.tail()` resolves once the gateway has set the read up, so with
 * `startId: '$'` every entry appended after that is seen. Entries carry
 * `deliveryCount` 0. The iteration rejects with a StreamgateError when the
 * call fails, e.g. UNAVAILABLE when the gateway shuts down (a tail does not
 * reconnect by itself: start a new one with `startId` set to the last ID
 * seen). `close()` cancels the call and ends the iteration.
 */
export class Tail {
  /**
   * @param {any} call The Tail call (a grpc-js readable stream).
   * @param {((heartbeat: Heartbeat) => void) | undefined} onHeartbeat
   */
  constructor(call, onHeartbeat) {
    this.call = call;
    this.onHeartbeat = onHeartbeat;
    /** The most recent heartbeat, or null before the first one. @type {Heartbeat | null} */
    this.lastHeartbeat = null;
    this.closed = false;
    /** A failure seen before (or between) iterations. @type {StreamgateError | null} */
    this.error = null;
    // A permanent listener: an 'error' event without one would crash the
    // process if the call fails while nobody iterates.
    call.on('error', (/** @type {any} */ err) => {
      if (!this.closed) this.error ??= StreamgateError.from(err);
    });
    /**
     * Resolves when the gateway has answered with headers, i.e. the read is
     * set up (`$` resolved); rejects if the call fails first.
     * @type {Promise<void>}
     */
    this.ready = new Promise((resolve, reject) => {
      call.once('metadata', () => resolve());
      call.once('error', (/** @type {any} */ err) => reject(StreamgateError.from(err)));
    });
  }

  /** Entries one by one. @returns {AsyncGenerator<Entry>} */
  async *[Symbol.asyncIterator]() {
    for await (const batch of this.batches()) yield* batch;
  }

  /**
   * Entries one gateway batch (one Redis read) at a time.
   * @returns {AsyncGenerator<Entry[]>}
   */
  async *batches() {
    try {
      for await (const response of this.call) {
        if (response.kind === 'batch') {
          yield response.batch.entries.map(toEntry);
        } else if (response.kind === 'heartbeat') {
          this.lastHeartbeat = toHeartbeat(response.heartbeat);
          this.onHeartbeat?.(this.lastHeartbeat);
        }
      }
    } catch (err) {
      if (this.closed) return;
      throw StreamgateError.from(err);
    } finally {
      this.call.cancel();
    }
    if (this.error && !this.closed) throw this.error;
  }

  /** Stops following the stream. */
  close() {
    this.closed = true;
    this.call.cancel();
  }
}
