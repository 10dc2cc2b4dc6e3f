// @ts-check
/**
 * Loads streamgate's service definitions from the repository's `proto/`
 * tree at run time, so this client can never drift from the protos: there is
 * no generated code to forget to regenerate. `STREAMGATE_PROTO_DIR` points
 * elsewhere (e.g. a copy shipped with an application).
 * @module
 */

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The directory holding `streamgate/v1/*.proto`. */
export function protoDir() {
  const dir = process.env.STREAMGATE_PROTO_DIR ?? resolve(HERE, '..', '..', '..', 'proto');
  if (!existsSync(join(dir, 'streamgate', 'v1', 'event_stream.proto'))) {
    throw new Error(
      `streamgate protos not found under ${dir}: use this package from a streamgate ` +
        'checkout (clients/node) or set STREAMGATE_PROTO_DIR',
    );
  }
  return dir;
}

/**
 * How messages look in JavaScript: camelCase fields (as in grpcurl's JSON);
 * 64-bit integers as Numbers, because every such field (counts, Unix
 * milliseconds) stays far below 2^53, where Numbers are exact; all fields
 * present with their defaults; `oneofs` adds the virtual field that tells
 * whether a proto3 `optional` field (e.g. `lag`) was set.
 * @type {protoLoader.Options}
 */
const LOADER_OPTIONS = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

/**
 * @typedef {object} Services
 * @property {grpc.ServiceClientConstructor} EventStream
 * @property {grpc.ServiceClientConstructor} StreamAdmin
 */

/** @type {Services | undefined} */
let services;

/** The two service client constructors, loaded once. @returns {Services} */
export function loadServices() {
  if (!services) {
    const dir = protoDir();
    const definition = protoLoader.loadSync(
      ['streamgate/v1/event_stream.proto', 'streamgate/v1/stream_admin.proto'],
      { ...LOADER_OPTIONS, includeDirs: [dir] },
    );
    const v1 = /** @type {any} */ (grpc.loadPackageDefinition(definition)).streamgate.v1;
    services = { EventStream: v1.EventStream, StreamAdmin: v1.StreamAdmin };
  }
  return services;
}
