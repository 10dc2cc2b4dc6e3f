//! Lua scripts for the operations that must be atomic.
//!
//! Each one reads and writes several things that must not interleave with
//! other clients: a crash of the gateway or a competing gateway between the
//! steps would otherwise lose or double an entry. Every key a script
//! touches is passed in KEYS, and all keys of one call share one cluster
//! slot: bookkeeping keys carry the stream key as hash tag so that they
//! live in the stream's slot, and [`DEAD_LETTER`]'s markers carry the
//! dead-letter stream's key, the only key it writes.

use std::sync::LazyLock;

use redis::Script;

/// Hands a consumer's pending entries to another consumer and removes it,
/// so that no entry delivered to the consumer in between can be destroyed by
/// DELCONSUMER. KEYS: stream. ARGV: group, consumer, target ('' = none).
/// Returns `{handed_over, destroyed}`; refuses with an error reply when the
/// consumer is unknown, or has pending entries and no target.
pub static REMOVE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key, group, consumer, target = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local known = false
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, group)) do
  for i = 1, #c, 2 do
    if c[i] == 'name' and c[i + 1] == consumer then known = true end
  end
end
if not known then return redis.error_reply('STREAMGATE_NOCONSUMER consumer is unknown') end
local moved = 0
while true do
  local rows = redis.call('XPENDING', key, group, '-', '+', 500, consumer)
  if #rows == 0 then break end
  if target == '' then return redis.error_reply('STREAMGATE_PENDING ' .. #rows) end
  local ids = {}
  for i, row in ipairs(rows) do ids[i] = row[1] end
  local claimed = redis.call('XCLAIM', key, group, target, 0, unpack(ids))
  moved = moved + #claimed
end
local destroyed = redis.call('XGROUP', 'DELCONSUMER', key, group, consumer)
return {moved, destroyed}
"#,
    )
});

/// One reclaim round of a subscription. KEYS: stream, Nack schedule
/// (sorted set, score = due time). ARGV: group, consumer, min idle ms, scan
/// cursor (`-` or `(id`), count, max deliveries (0 = no limit), now ms.
///
/// First takes entries whose Nack delay has passed, then scans for entries
/// idle for `min idle` that are not scheduled for later. An entry already
/// delivered `max deliveries` times, or deleted while pending, becomes a
/// dead-letter candidate: it is left pending, untouched, and returned, and
/// the broker moves it with [`DEAD_LETTER`] and then acknowledges it (the
/// dead-letter stream is another key, in another cluster slot, so it cannot
/// be written here; see `Broker::reclaim` for why the move stays
/// exactly-once). Any other entry is claimed (XCLAIM counts a delivery).
///
/// Returns `{next cursor (last ID scanned; '' = scan complete), {{id,
/// fields, count}...}, {{id, owner, deliveries, reason, {fields...}}...},
/// due time of the earliest Nack still scheduled ('' = none)}`: the
/// subscription plans its next round by that due time, so a Nack's delay
/// is honoured even when it was scheduled through another gateway. Reason
/// is `max_deliveries` or `trimmed` (no fields).
pub static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key, nacks = KEYS[1], KEYS[2]
local group, me, min_idle, cursor = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local budget, max, now = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local out, dead = {}, {}

-- row = {id, owner, idle, deliveries} from XPENDING
local function take(row)
  local id, owner, deliveries = row[1], row[2], row[4]
  local found = redis.call('XRANGE', key, id, id)
  if #found == 0 then
    dead[#dead + 1] = {id, owner, deliveries, 'trimmed', {}}
  elseif max > 0 and deliveries >= max then
    dead[#dead + 1] = {id, owner, deliveries, 'max_deliveries', found[1][2]}
  else
    local claimed = redis.call('XCLAIM', key, group, me, 0, id)
    out[#out + 1] = {id, claimed[1][2], deliveries + 1}
  end
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', nacks, '-inf', now, 'LIMIT', 0, budget)) do
  redis.call('ZREM', nacks, id)
  local rows = redis.call('XPENDING', key, group, id, id, 1)
  if #rows > 0 then
    take(rows[1])
    budget = budget - 1
  end
end

local next_cursor = ''
if budget > 0 then
  local rows = redis.call('XPENDING', key, group, 'IDLE', min_idle, cursor, '+', budget)
  for _, row in ipairs(rows) do
    if not redis.call('ZSCORE', nacks, row[1]) then take(row) end
  end
  if #rows == budget then next_cursor = rows[#rows][1] end
end
local first = redis.call('ZRANGE', nacks, 0, 0, 'WITHSCORES')
return {next_cursor, out, dead, first[2] or ''}
"#,
    )
});

/// Writes dead letters to a dead-letter stream, each at most once. KEYS:
/// dead-letter stream, then one "already written" marker per record, in
/// the dead-letter stream's slot (`<prefix>{<dlq key>}:dlq-seen:...`,
/// named by source stream, group and entry ID). ARGV: marker lifetime ms,
/// then per record: item count n, n field/value items. A record whose
/// marker exists is skipped: it was written by an earlier attempt (a
/// gateway that crashed before acknowledging the entry, or a competing
/// gateway's round). Returns how many records were written.
///
/// The marker is set only after its record's XADD succeeded (check with
/// EXISTS, XADD, then SET; the script is atomic, so nothing can come in
/// between the check and the set). Redis does not roll back a script that
/// fails midway: a marker set before an XADD that then fails (an entry
/// written by another program with more fields than `unpack` returns, an
/// out-of-memory refusal) would make the next round skip the record as
/// written, and the broker would then acknowledge the entry with no
/// record anywhere. In this order a failed XADD leaves no marker, the
/// script fails, the entry stays pending and the next round tries again;
/// a SET that failed after its XADD can at worst repeat the record.
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local written, a = 0, 2
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, a + 1, a + n))
    redis.call('SET', KEYS[k], '1', 'PX', ARGV[1])
    written = written + 1
  end
  a = a + n + 1
end
return written
"#,
    )
});

/// Acknowledges entries one by one and says which were pending. KEYS:
/// stream. ARGV: group, id... Returns the IDs acknowledged. XACK answers 0
/// for a group that does not exist, so when some ID was not acked the
/// script asks XPENDING, which fails with NOGROUP for a missing group.
pub static ACK_EACH: LazyLock<Script> = LazyLock::new(|| Script::new(ACK_EACH_BODY));

/// The text of [`ACK_EACH`] (also run behind a lease check).
pub const ACK_EACH_BODY: &str = r"
local done = {}
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then done[#done + 1] = ARGV[i] end
end
if #done < #ARGV - 1 then redis.call('XPENDING', KEYS[1], ARGV[1]) end
return done
";

/// Schedules entries pending for a consumer for redelivery. KEYS: stream,
/// Nack schedule. ARGV: group, consumer, due time ms, id... Returns the IDs
/// that were pending for the consumer and are now scheduled.
pub static NACK: LazyLock<Script> = LazyLock::new(|| Script::new(NACK_BODY));

/// The text of [`NACK`] (also run behind a lease check).
pub const NACK_BODY: &str = r"
local done = {}
for i = 4, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[i])
    done[#done + 1] = ARGV[i]
  end
end
return done
";

/// Resets the idle time of entries pending for a consumer without counting
/// a delivery; entries of other consumers are left alone. KEYS: stream.
/// ARGV: group, consumer, id... Returns the IDs extended.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local done = {}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    if #claimed > 0 then done[#done + 1] = ARGV[i] end
  end
end
return done
"#,
    )
});

/// Appends a batch of events, skipping those whose idempotency key was
/// seen within the window. KEYS: stream, then one dedup key per keyed event
/// in order. ARGV: cap mode ('' | '~' | '='), max len, window ms, touch
/// ('1' | '0'), then per event: keyed ('1' | '0'), field count n, n
/// field/value items. Returns the IDs in order (the original ID for a
/// duplicate).
///
/// With touch, a duplicate restarts its key's window. That write is what
/// makes a retried Produce safe under `--produce-wait-replicas`: WAIT only
/// vouches for writes of its own connection, and a retry that wrote nothing
/// would be confirmed at once although the original write (made on another
/// connection) may not have reached a replica yet. The touch is replicated
/// after the original write, so a replica that has it has both.
pub static PRODUCE_IDEMPOTENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids, a, k = {}, 5, 2
local touch = ARGV[4] == '1'
while a <= #ARGV do
  local keyed, n = ARGV[a] == '1', tonumber(ARGV[a + 1])
  a = a + 2
  local dedup, existing = nil, false
  if keyed then
    dedup = KEYS[k]
    k = k + 1
    existing = redis.call('GET', dedup)
  end
  if existing then
    if touch then redis.call('PEXPIRE', dedup, ARGV[3]) end
    ids[#ids + 1] = existing
  else
    local args = {KEYS[1]}
    if ARGV[1] ~= '' then
      args[2], args[3], args[4] = 'MAXLEN', ARGV[1], ARGV[2]
    end
    args[#args + 1] = '*'
    for j = a, a + n - 1 do args[#args + 1] = ARGV[j] end
    local id = redis.call('XADD', unpack(args))
    if keyed then redis.call('SET', dedup, id, 'PX', ARGV[3]) end
    ids[#ids + 1] = id
  end
  a = a + n
end
return ids
"#,
    )
});
