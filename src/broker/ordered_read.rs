//! One read of an owned partition in ordered consumption: every decision
//! that keeps a partition in order is taken in one script, behind its
//! lease, so that nothing can come between the check and the read.

use std::sync::LazyLock;

use redis::Script;

use super::reply::{self, Cursor};
use super::{Broker, Holder, recovery};
use crate::error::{Error, Result};
use crate::ids::StreamId;
use crate::model::{Delivered, Entry};

/// Reads an owned partition in order. KEYS: stream, lease, Nack schedule.
/// ARGV: group, consumer, holder, scan ('' = new entries, '-' = the whole
/// pending entries list, '(<id>' = after id), count, max deliveries (0 =
/// none), now ms, min idle ms (0 = no idle check), max in flight (0 =
/// none).
///
/// In this order:
/// 1. Not the lease's holder: `{'lost'}`, nothing read.
/// 2. Nacked entries still pending: the partition is held (`{'hold',
///    due}`) until the earliest of them (by ID) is due, then the scan
///    restarts at it, so it and every later pending entry come again, in
///    order, before anything new.
/// 3. Reading new entries, but some other consumer has entries of this
///    partition pending (a Reap, an unordered subscriber, a previous owner
///    that lost its lease mid-read): the scan restarts at the beginning.
///    With an idle check, an own entry pending for `min idle` (a client
///    that took it and never answered) restarts the scan at it.
/// 4. Scanning: the next `count` pending entries after the scan point,
///    whoever holds them, are claimed and returned with their counts,
///    `{'pending', last id scanned or '' at the end, {{id, fields,
///    count}...}, dead letters}`. A delivery is counted for the entry the
///    scan restarted at (the head: the oldest pending entry at a takeover,
///    the nacked or idle entry) and not for the ones after it, which only
///    come again because they must follow it: so `max deliveries` counts
///    the times an entry held its partition up, and a poison entry never
///    takes the innocent entries behind it to the dead letters. A head
///    already delivered `max deliveries` times, or any entry trimmed away,
///    is a dead-letter candidate instead (as in `scripts::RECLAIM`, moved
///    by the broker), and the next entry becomes the head.
/// 5. Otherwise new entries, within `max in flight`: `{'new', '', {{id,
///    fields}...}, {}}` (XREADGROUP's entries as they are, the hot path),
///    or `{'full'}` when there is no room.
static ORDERED_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key, lease, nacks = KEYS[1], KEYS[2], KEYS[3]
local group, me, holder, scan = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local count, max, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local min_idle, cap = tonumber(ARGV[8]), tonumber(ARGV[9])
if redis.call('GET', lease) ~= holder then return {'lost', '', {}, {}} end

local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end

local first, due = nil, 0
local scheduled = redis.call('ZRANGE', nacks, 0, -1, 'WITHSCORES')
for i = 1, #scheduled, 2 do
  local id = scheduled[i]
  if #redis.call('XPENDING', key, group, id, id, 1) == 0 then
    redis.call('ZREM', nacks, id)
  elseif not first or before(id, first) then
    first, due = id, tonumber(scheduled[i + 1])
  end
end
if first then
  if due > now then return {'hold', tostring(due), {}, {}} end
  redis.call('DEL', nacks)
  if scan == '' or (scan ~= '-' and not before(string.sub(scan, 2), first)) then scan = first end
end

if scan == '' then
  local mine = 0
  local summary = redis.call('XPENDING', key, group)
  if summary[4] then
    for _, c in ipairs(summary[4]) do
      if c[1] == me then mine = tonumber(c[2]) else scan = '-' end
    end
  end
  if scan == '' and min_idle > 0 and mine > 0 then
    local idle = redis.call('XPENDING', key, group, 'IDLE', min_idle, '-', '+', 1)
    if #idle > 0 then scan = idle[1][1] end
  end
  if scan == '' then
    if cap > 0 then
      if mine >= cap then return {'full', '', {}, {}} end
      count = math.min(count, cap - mine)
    end
    local read = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', key, '>')
    return {'new', '', read and read[1][2] or {}, {}}
  end
end

local rows = redis.call('XPENDING', key, group, scan, '+', count)
local out, dead = {}, {}
local head = string.sub(scan, 1, 1) ~= '('
for _, row in ipairs(rows) do
  local id, owner, deliveries = row[1], row[2], row[4]
  local found = redis.call('XRANGE', key, id, id)
  if #found == 0 then
    dead[#dead + 1] = {id, owner, deliveries, 'trimmed', {}}
  elseif head and max > 0 and deliveries >= max then
    dead[#dead + 1] = {id, owner, deliveries, 'max_deliveries', found[1][2]}
  else
    if head then deliveries = deliveries + 1 end
    local claimed = redis.call('XCLAIM', key, group, me, 0, id, 'RETRYCOUNT', deliveries)
    out[#out + 1] = {id, claimed[1][2], deliveries}
    head = false
  end
end
local last = ''
if #rows == count then last = rows[#rows][1] end
return {'pending', last, out, dead}
",
    )
});

/// Where an ordered read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// New entries (the pending entries list is settled).
    New,
    /// The partition's pending entries after this ID (`None`: all of
    /// them), whoever holds them.
    Pending(Option<StreamId>),
}

/// What one ordered read asks for.
#[derive(Clone, Debug)]
pub struct OrderedRead<'a> {
    /// Group.
    pub group: &'a str,
    /// The subscription's lease identity (and consumer).
    pub holder: &'a Holder,
    /// Where to read.
    pub scan: Scan,
    /// Entries at most.
    pub count: u32,
    /// Dead-letter an entry already delivered this often (0 = never).
    pub max_deliveries: u32,
    /// Client name of the dead-letter stream.
    pub dead_letter_stream: &'a str,
    /// Restart the scan at an own entry pending this long (0 = never).
    pub min_idle_ms: u64,
    /// Cap on the consumer's pending entries of the partition (0 = none).
    pub max_in_flight: u32,
}

/// The outcome of an ordered read.
#[derive(Debug)]
pub enum Ordered {
    /// The lease is not (or no longer) this subscription's.
    Lost,
    /// A Nacked entry holds the partition back until this Unix ms.
    Hold(i64),
    /// No room under `max_in_flight`.
    Full,
    /// Entries, in order, and where the scan goes on.
    Read {
        /// Entries to deliver.
        entries: Vec<Entry>,
        /// Where the next read starts.
        next: Scan,
    },
}

impl Broker {
    /// One ordered read of partition stream `partition` (see
    /// [`ORDERED_READ`]), then the move of its dead-letter candidates.
    pub async fn read_ordered(&self, partition: &str, read: &OrderedRead<'_>) -> Result<Ordered> {
        let scan = match read.scan {
            Scan::New => String::new(),
            Scan::Pending(None) => "-".to_owned(),
            Scan::Pending(Some(id)) => format!("({id}"),
        };
        let mut call = ORDERED_READ.key(self.key(partition));
        call.key(self.lease_key(partition, read.group))
            .key(self.nack_key(partition, read.group))
            .arg(read.group)
            .arg(read.holder.consumer())
            .arg(read.holder.value())
            .arg(scan)
            .arg(read.count.max(1))
            .arg(read.max_deliveries)
            .arg(super::now_ms())
            .arg(read.min_idle_ms)
            .arg(read.max_in_flight);
        let value = self.invoke(&call, partition, Some(read.group)).await?;
        let mut parts = Cursor::new(value, "ordered read")?;
        let kind = parts.next_string()?;
        let text = parts.next_string()?;
        let mut entries = Vec::new();
        for item in parts.next_array("ordered entries")?.rows("ordered entry") {
            let mut item = item?;
            let id = item.next_id()?;
            let fields = reply::pairs(item.next_value()?)?;
            let delivered = match kind.as_str() {
                "new" => Delivered::First,
                _ => Delivered::Again(item.next_uint()?),
            };
            item.finish()?;
            entries.push(Entry::from_pairs(id, fields).delivered(delivered));
        }
        let dead = recovery::dead_letters(parts.next_array("dead letters")?)?;
        parts.finish()?;
        let outcome = match kind.as_str() {
            "lost" => Ordered::Lost,
            "full" => Ordered::Full,
            "hold" => Ordered::Hold(text.parse::<f64>().map_or(0, |ms| ms as i64)),
            "new" => Ordered::Read {
                entries,
                next: Scan::New,
            },
            "pending" => {
                let next = match text.as_str() {
                    "" => Scan::New,
                    id => Scan::Pending(Some(reply::parse_id(id)?)),
                };
                let (moved, trimmed) = self
                    .bury(partition, read.group, read.dead_letter_stream, dead)
                    .await?;
                if !moved.is_empty() || !trimmed.is_empty() {
                    tracing::info!(
                        stream = %partition, group = %read.group,
                        dead_lettered = moved.len(), trimmed = trimmed.len(),
                        dead_letter_stream = %read.dead_letter_stream,
                        "moved entries to the dead-letter stream"
                    );
                }
                Ordered::Read { entries, next }
            }
            other => {
                return Err(Error::Internal(format!("ordered read answered {other:?}")));
            }
        };
        Ok(outcome)
    }
}
