// @ts-check
/**
 * The capped exponential backoff every reconnecting stream uses.
 * @module
 */

import * as grpc from '@grpc/grpc-js';

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
 * Codes that end a long-lived stream for a reason a retry can fix: the
 * gateway shut down or is unreachable (UNAVAILABLE), or its Redis timed out
 * (DEADLINE_EXCEEDED: the streams themselves never carry a client deadline).
 */
export const RECONNECT_CODES = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

/** @param {Backoff} backoff @returns {Generator<number, never>} */
export function* delays({ initialMs = 100, maxMs = 5000, multiplier = 2, jitter = 0.2 }) {
  for (let delay = initialMs; ; delay = Math.min(delay * multiplier, maxMs)) {
    yield delay * (1 - jitter * Math.random());
  }
}
