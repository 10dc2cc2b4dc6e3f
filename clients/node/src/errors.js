// @ts-check
/**
 * One error type for every failed call, carrying the gRPC status code.
 * @module
 */

import * as grpc from '@grpc/grpc-js';

/**
 * A failed call: `code` is the gRPC status code (compare with
 * `grpc.status.NOT_FOUND` etc., re-exported as `status`) and `details` the
 * gateway's message, which names the field, group or limit at fault.
 */
export class StreamgateError extends Error {
  /** @param {number} code @param {string} details */
  constructor(code, details) {
    super(`${grpc.status[code] ?? code}: ${details}`);
    this.name = 'StreamgateError';
    this.code = code;
    this.details = details;
  }

  /** True for "try again later" codes (gateway or Redis briefly unreachable). */
  get retryable() {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.DEADLINE_EXCEEDED;
  }

  /** @param {any} err @returns {StreamgateError} */
  static from(err) {
    if (err instanceof StreamgateError) return err;
    return new StreamgateError(err?.code ?? grpc.status.UNKNOWN, err?.details ?? String(err));
  }
}
