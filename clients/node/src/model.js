// @ts-check
/**
 * Plain values for what the gateway sends and receives, converted from the
 * loaded messages in one place each.
 * @module
 */

/**
 * An event to produce. The field names `type`, `ts_ms` and `partition_key`
 * are reserved (the gateway writes them) and rejected with INVALID_ARGUMENT.
 * @typedef {object} Event
 * @property {string} type Event type, e.g. `order.placed`.
 * @property {Record<string, string>} [fields] User fields.
 * @property {Record<string, Uint8Array>} [binaryFields] User fields with byte values.
 * @property {string} [idempotencyKey] Makes a retried Produce safe: an event whose key was
 *   already produced to the stream within the gateway's `--dedup-window-ms` (default 24 h) is
 *   not written again, and its original ID is returned. Empty: no deduplication.
 * @property {string} [key] Partition key (at most 1024 bytes), stored with the entry in the
 *   reserved Redis field `partition_key` and returned as `Entry.key`. On a partitioned stream,
 *   events with one key go to one partition, in production order. Empty: none.
 */

/**
 * A stream entry as a reader receives it.
 * @typedef {object} Entry
 * @property {string} id Stream ID `ms-seq`.
 * @property {string} type Event type; empty if the entry has none.
 * @property {number} tsMs The gateway's clock when it appended the entry (Unix ms); 0 if absent.
 * @property {Record<string, string>} fields User fields with UTF-8 values.
 * @property {Record<string, Buffer>} binaryFields User fields whose values are not UTF-8.
 * @property {number} deliveryCount Deliveries to the group: 1 on a first delivery, more after
 *   re-deliveries, reclaims and reaps; 0 where no group is involved (Replay, Tail) or unknown.
 * @property {boolean} redelivered True when this delivery is a re-delivery (`pendingFirst`,
 *   reclaim, Nack): the entry may have been processed before, so handlers must be idempotent.
 * @property {number} partition The partition the entry lives in; 0 on a plain stream.
 * @property {string} key The event's partition key; empty if it has none.
 */

/**
 * A keep-alive of a Subscribe or Tail stream with nothing to deliver.
 * @typedef {object} Heartbeat
 * @property {number} serverTimeMs The gateway's wall clock (Unix ms) when it sent it.
 */

/**
 * Automatic recovery of a subscription: every `intervalMs` it claims the
 * group's entries idle for at least `minIdleMs` (a crashed peer's work) and
 * entries whose Nack delay has passed, and delivers them with `redelivered`
 * set.
 * @typedef {object} Reclaim
 * @property {number} minIdleMs Claim entries idle (not delivered, claimed or extended) for at
 *   least this long; must be > 0.
 * @property {number} [intervalMs] How often to look; 0 or unset = `minIdleMs / 2`.
 */

/**
 * What a Reap claimed. `deletedIds` were pending but their entries no longer
 * exist (trimmed); Redis already dropped them from the PEL. `nextStartId`
 * continues the scan; `0-0` means the whole PEL was scanned.
 * @typedef {object} ReapResult
 * @property {Entry[]} claimed
 * @property {string[]} deletedIds
 * @property {string} nextStartId
 */

/**
 * @typedef {object} StreamInfo
 * @property {number} length Summed over the partitions of a partitioned stream.
 * @property {string} firstEntryId Empty when the stream is empty.
 * @property {string} lastEntryId Empty when the stream is empty.
 * @property {string} lastGeneratedId
 * @property {number} groupCount
 * @property {number} partitions 0 for a plain stream.
 */

/**
 * One partition of a stream, as ListPartitions reports it.
 * @typedef {object} PartitionInfo
 * @property {number} partition Its number, from 0.
 * @property {string} key Its Redis key.
 * @property {number} length
 * @property {string} lastEntryId Its newest entry (`ms-seq`); empty when it is empty.
 * @property {string} owner With a group: the ordered consumer that owns it; empty when none does.
 * @property {number} pending With a group: the group's pending entries in it.
 * @property {number | null} lag With a group: entries it has not read yet, where Redis can
 *   tell; null otherwise.
 */

/**
 * A stream under the gateway's key prefix, as ListStreams reports it.
 * @typedef {object} StreamSummary
 * @property {string} name
 * @property {number} length
 * @property {string} lastEntryId Empty when the stream is empty.
 * @property {number} groupCount
 */

/**
 * A consumer group. `lag` (entries not yet delivered to the group) and
 * `entriesRead` are null when Redis cannot tell.
 * @typedef {object} GroupInfo
 * @property {string} name
 * @property {number} consumers
 * @property {number} pending
 * @property {string} lastDeliveredId
 * @property {number | null} lag
 * @property {number | null} entriesRead
 */

/**
 * A consumer of a group. `idleMs` counts from its last read or claim attempt;
 * `inactiveMs` from its last successful one (null before Redis 7.2).
 * @typedef {object} ConsumerInfo
 * @property {string} name
 * @property {number} pending
 * @property {number} idleMs
 * @property {number | null} inactiveMs
 */

/**
 * An entry delivered to `consumer` and not yet acknowledged.
 * @typedef {object} PendingEntry
 * @property {string} id
 * @property {string} consumer
 * @property {number} idleMs
 * @property {number} deliveryCount
 */

/** @param {any} m @returns {Entry} */
export function toEntry(m) {
  return {
    id: m.id,
    type: m.type,
    tsMs: m.tsMs,
    fields: { ...m.fields },
    binaryFields: { ...m.binaryFields },
    deliveryCount: m.deliveryCount,
    redelivered: m.redelivered,
    partition: m.partition,
    key: m.key,
  };
}

/** @param {any} m @returns {Heartbeat} */
export function toHeartbeat(m) {
  return { serverTimeMs: m.serverTimeMs };
}

/**
 * The value of a proto3 `optional` field, or null when unset (the loader
 * marks a set one in the virtual oneof `_name`).
 * @param {any} m @param {string} name @returns {number | null}
 */
function optional(m, name) {
  return m[`_${name}`] === name ? m[name] : null;
}

/** @param {any} m @returns {GroupInfo} */
export function toGroupInfo(m) {
  return {
    name: m.name,
    consumers: m.consumers,
    pending: m.pending,
    lastDeliveredId: m.lastDeliveredId,
    lag: optional(m, 'lag'),
    entriesRead: optional(m, 'entriesRead'),
  };
}

/** @param {any} m @returns {ConsumerInfo} */
export function toConsumerInfo(m) {
  return { name: m.name, pending: m.pending, idleMs: m.idleMs, inactiveMs: optional(m, 'inactiveMs') };
}

/** @param {any} m @returns {PendingEntry} */
export function toPendingEntry(m) {
  return { id: m.id, consumer: m.consumer, idleMs: m.idleMs, deliveryCount: m.deliveryCount };
}

/** @param {any} m @returns {StreamSummary} */
export function toStreamSummary(m) {
  return {
    name: m.name,
    length: m.length,
    lastEntryId: m.lastEntryId,
    groupCount: m.groupCount,
  };
}

/** @param {any} m @returns {StreamInfo} */
export function toStreamInfo(m) {
  return {
    length: m.length,
    firstEntryId: m.firstEntryId,
    lastEntryId: m.lastEntryId,
    lastGeneratedId: m.lastGeneratedId,
    groupCount: m.groupCount,
    partitions: m.partitions,
  };
}

/** @param {any} m @returns {PartitionInfo} */
export function toPartitionInfo(m) {
  return {
    partition: m.partition,
    key: m.key,
    length: m.length,
    lastEntryId: m.lastEntryId,
    owner: m.owner,
    pending: m.pending,
    lag: optional(m, 'lag'),
  };
}
