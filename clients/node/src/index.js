// @ts-check
/**
 * Node.js client for streamgate, the gRPC gateway to Redis Streams.
 *
 * - `new Producer(addr).publish(stream, event)` appends events, batched over
 *   one ProduceStream; `produce` is the unary call.
 * - `new Consumer(addr, stream, group, consumer)` is a consumer-group member
 *   over one Consume stream: `for await` its entries, `ack` them once
 *   processed (or `nack` them for re-delivery), in band and batched; it
 *   extends the lease of entries it holds, reconnects by itself when a
 *   gateway restarts, and with `reclaim` recovers the work of crashed peers.
 *   `ordered: true` (a partitioned stream) gives each partition one owner in
 *   the group and keeps each partition's acks in order;
 *   `consumer.process(handler, { concurrency })` runs a handler on up to
 *   `concurrency` entries at once, one partition's entries one after the other.
 * - `new Client(addr)` exposes every RPC (nack, extend, reap, replay, tail,
 *   trim, admin).
 *
 * Failed calls reject with a StreamgateError carrying the gRPC status `code`
 * (compare with `status.NOT_FOUND`, ...). The service definitions are loaded
 * from the repository's protos at run time (see proto.js).
 * @module
 */

export { status } from '@grpc/grpc-js';
export { Client, Producer, StreamgateError, channelOptions } from './client.js';
export { Consumer, RECONNECT_CODES } from './consumer.js';
export { Tail } from './tail.js';
