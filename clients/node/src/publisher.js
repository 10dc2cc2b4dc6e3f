// @ts-check
/**
 * `Publisher`: single events batched over one long-lived ProduceStream.
 *
 * Every `publish` lands in a per-stream buffer that becomes one
 * ProduceRequest when it holds `maxEvents` events or `maxBytes` bytes, or
 * `lingerMs` after its first event, whichever comes first (the shape of
 * Pub/Sub's publisher). Requests go out on one ProduceStream per producer,
 * opened on the first publish and kept open; many are in flight at once and
 * the gateway answers each in request order, so answers are matched to
 * requests by position.
 *
 * A request the gateway refuses (its answer carries a non-zero `code`)
 * fails exactly the publishes it carried; the stream goes on. When the
 * stream itself breaks (UNAVAILABLE: the gateway restarts), it is reopened
 * with backoff and every unanswered request is sent again. With idempotency
 * keys that resend is harmless; without them an event the gateway appended
 * before the break is appended again: delivery to the stream is
 * at-least-once.
 * @module
 */

import { StreamgateError } from './errors.js';
import { RECONNECT_CODES, delays } from './backoff.js';

/** @typedef {import('./model.js').Event} Event */
/** @typedef {import('./backoff.js').Backoff} Backoff */

/**
 * When buffered events become one request.
 * @typedef {object} BatchSettings
 * @property {number} [maxEvents] At this many events (default 100).
 * @property {number} [maxBytes] At about this many bytes of events (default 1 MiB).
 * @property {number} [lingerMs] This long after the batch's first event (default 10; 0: on
 *   the next turn of the event loop, which still batches publishes made in one go).
 */

/**
 * @typedef {object} Request One ProduceRequest in the making.
 * @property {string} stream
 * @property {object[]} events
 * @property {Array<{ resolve: (id: string) => void, reject: (err: Error) => void }>} waiters
 * @property {Promise<unknown>[]} settled One per event, settles with its publish.
 * @property {number} size
 * @property {NodeJS.Timeout | null} timer
 */

/** A rough encoded size of one event, for `maxBytes`. @param {any} e */
function eventSize(e) {
  let size = 12 + Buffer.byteLength(e.type) + Buffer.byteLength(e.idempotencyKey) + Buffer.byteLength(e.key);
  for (const [k, v] of Object.entries(e.fields)) size += 6 + Buffer.byteLength(k) + Buffer.byteLength(String(v));
  for (const [k, v] of Object.entries(e.binaryFields)) size += 6 + Buffer.byteLength(k) + /** @type {Uint8Array} */ (v).length;
  return size;
}

/** The batching machinery behind `Producer.publish`. */
export class Publisher {
  /** @param {any} stub EventStream stub @param {BatchSettings} settings @param {Backoff} backoff */
  constructor(stub, { maxEvents = 100, maxBytes = 1 << 20, lingerMs = 10 } = {}, backoff = {}) {
    if (!(maxEvents >= 1 && maxBytes >= 1 && lingerMs >= 0)) throw new RangeError('invalid batch settings');
    this.stub = stub;
    this.settings = { maxEvents, maxBytes, lingerMs };
    this.backoff = backoff;
    this.wait = delays(backoff);
    /** @type {Map<string, Request>} */ this.buffers = new Map();
    /** @type {Request[]} */ this.unsent = [];
    /** @type {Request[]} */ this.inflight = [];
    /** @type {any} */ this.call = null;
    /** @type {NodeJS.Timeout | null} */ this.reopenTimer = null;
    this.closing = false;
    this.abandoned = false;
    /** ProduceRequests written to the gateway (resends included). */
    this.requestsSent = 0;
    /** ProduceStream calls opened (1 unless the stream broke). */
    this.streamsOpened = 0;
  }

  /** @param {string} stream @param {any} event a message-shaped Event @returns {Promise<string>} */
  publish(stream, event) {
    if (this.closing) return Promise.reject(new Error('publish on a closed producer'));
    const size = eventSize(event);
    let batch = this.buffers.get(stream);
    if (batch && batch.size + size > this.settings.maxBytes) {
      this.ship(stream);
      batch = undefined;
    }
    if (!batch) {
      const b = /** @type {Request} */ ({ stream, events: [], waiters: [], settled: [], size: 0, timer: null });
      b.timer = setTimeout(() => this.buffers.get(stream) === b && this.ship(stream), this.settings.lingerMs);
      this.buffers.set(stream, b);
      batch = b;
    }
    const promise = new Promise((resolve, reject) => batch.waiters.push({ resolve, reject }));
    batch.events.push(event);
    batch.settled.push(promise.catch(() => {}));
    batch.size += size;
    if (batch.events.length >= this.settings.maxEvents || batch.size >= this.settings.maxBytes) this.ship(stream);
    return /** @type {Promise<string>} */ (promise);
  }

  /** Sends every buffered event now; resolves once all publishes so far are answered. */
  async flush() {
    for (const stream of [...this.buffers.keys()]) this.ship(stream);
    await Promise.all([...this.inflight, ...this.unsent].flatMap((r) => r.settled));
  }

  /**
   * Sends what is buffered, waits for the answers (at most `timeoutMs`; what
   * is unanswered then fails with UNAVAILABLE) and half-closes the stream.
   * @param {number} timeoutMs
   */
  async close(timeoutMs) {
    this.closing = true;
    let timer;
    const expired = new Promise((done) => { timer = setTimeout(done, timeoutMs); });
    await Promise.race([this.flush(), expired]);
    clearTimeout(timer);
    this.abandoned = true;
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.call?.cancel();
    this.call = null;
    const left = [...this.inflight, ...this.unsent];
    this.inflight = [];
    this.unsent = [];
    fail(left, new StreamgateError(14, 'producer closed before the gateway answered'));
  }

  /** Moves a buffer to the send queue and writes what can be written. @param {string} stream */
  ship(stream) {
    const batch = /** @type {Request} */ (this.buffers.get(stream));
    this.buffers.delete(stream);
    if (batch.timer) clearTimeout(batch.timer);
    this.unsent.push(batch);
    this.pump();
  }

  /** Opens the stream if needed and writes every queued request. */
  pump() {
    if (this.abandoned) return;
    if (!this.call) {
      if (this.reopenTimer || this.unsent.length === 0) return;
      this.open();
    }
    while (this.unsent.length > 0) {
      const request = /** @type {Request} */ (this.unsent.shift());
      this.inflight.push(request);
      this.requestsSent += 1;
      this.call.write({ stream: request.stream, events: request.events });
    }
    // Closing and everything written: half-close; the gateway ends the
    // stream OK once every answer is sent.
    if (this.closing && this.buffers.size === 0 && !this.call.halfClosed) {
      this.call.halfClosed = true;
      this.call.end();
    }
  }

  open() {
    const call = this.stub.ProduceStream();
    this.call = call;
    this.streamsOpened += 1;
    call.on('data', (/** @type {any} */ response) => {
      const request = this.inflight.shift();
      if (!request) return;
      this.wait = delays(this.backoff); // the stream works
      answer(request, response);
    });
    call.on('error', (/** @type {any} */ err) => this.ended(call, StreamgateError.from(err)));
    call.on('status', (/** @type {any} */ status) => status.code === 0 && this.ended(call, null));
  }

  /** One call ended (`error` null: OK, after our half-close). @param {any} call @param {StreamgateError | null} error */
  ended(call, error) {
    if (this.call !== call) return;
    this.call = null;
    if (this.abandoned) return;
    const lost = this.inflight;
    this.inflight = [];
    if (error === null || RECONNECT_CODES.has(error.code)) {
      this.unsent.unshift(...lost); // unanswered requests go out again, first
      if (this.unsent.length === 0) return;
      if (error === null) return this.pump();
      this.reopenTimer = setTimeout(() => {
        this.reopenTimer = null;
        this.pump();
      }, this.wait.next().value);
    } else {
      // e.g. UNAUTHENTICATED: what is queued would fail alike.
      fail([...lost, ...this.unsent], error);
      this.unsent = [];
    }
  }
}

/** @param {Request} request @param {any} response */
function answer(request, response) {
  if (response.code !== 0) {
    fail([request], new StreamgateError(response.code, response.message));
  } else if (response.ids.length !== request.waiters.length) {
    fail([request], new StreamgateError(13, `${response.ids.length} IDs in the answer to ${request.waiters.length} events`));
  } else {
    request.waiters.forEach((w, i) => w.resolve(response.ids[i]));
  }
}

/** @param {Request[]} requests @param {Error} error */
function fail(requests, error) {
  for (const request of requests) for (const w of request.waiters) w.reject(error);
}
