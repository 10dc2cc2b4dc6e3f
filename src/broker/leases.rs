//! Partition ownership for ordered consumption, kept in Redis.
//!
//! Two kinds of keys, neither needing a coordinator process:
//!
//! - **Members** of a group's ordered consumption: a sorted set in the
//!   stream's slot (`<prefix>{<stream key>}:members:<group>`), consumer
//!   name scored by when its membership lapses, by the Redis server's own
//!   clock (`TIME` inside the script, so gateways' clocks never disagree).
//!   Every ordered subscription renews its consumer's membership each
//!   rebalance tick and reads the live members back; from that list each
//!   one works out which partitions it should own (see
//!   `crate::ordered::owner`).
//! - **Leases**: one string per partition and group, in the partition's
//!   slot (`<prefix>{<partition key>}:owner:<group>`), holding the
//!   [`Holder`] that owns it, with an expiry (`SET NX PX`). Only the holder
//!   renews or releases it (checked in a script, compare-and-set), so one
//!   partition never has two owners: a new owner waits until the old one
//!   released it or its lease lapsed. Reads, in-band acks and Nacks of an
//!   ordered subscription check the lease in the same script that acts
//!   (fencing): a gateway cut off from Redis whose lease lapsed can neither
//!   read the partition nor ack for it.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::reply;
use super::{Broker, Outcome, scripts};
use crate::error::Result;
use crate::ids::StreamId;

/// One ordered subscription's identity in a lease: its consumer name and a
/// token of its own, so that two subscriptions of one consumer name (a
/// reconnect while the old stream lingers) are still told apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The lease value: `<token> <consumer>`, the token 32 hex digits.
    value: String,
}

/// Hex digits of a holder's token; the lease value's consumer name starts
/// after them and a space.
const TOKEN_LEN: usize = 32;

impl Holder {
    /// A new holder for `consumer`, with a random token.
    pub fn new(consumer: &str) -> Holder {
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        Holder {
            value: format!("{token} {consumer}"),
        }
    }

    /// The consumer name.
    pub fn consumer(&self) -> &str {
        &self.value[TOKEN_LEN + 1..]
    }

    /// What the lease key holds while this holder owns it.
    pub(super) fn value(&self) -> &str {
        &self.value
    }
}

/// Renews a membership and answers the live members. KEYS: members.
/// ARGV: consumer, membership time ms.
static MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return redis.call('ZRANGE', KEYS[1], 0, -1)
",
    )
});

/// Renews (ARGV[2] = ms) or, with ARGV[2] = 0, releases a lease, only for
/// its holder. KEYS: lease. ARGV: holder, ms. Returns 1 when it was held.
static KEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
",
    )
});

/// Acks in ordered consumption, the IDs in the order given: an ID is
/// acknowledged only when it is the partition's oldest pending entry (in
/// the group), so acks of a partition take effect in ID order, whoever
/// sends them and whenever. This is what makes a key's first acks come in
/// production order: a consumer that acks in the order it received cannot
/// ack an entry while an earlier one it was given is still pending (say
/// its ack was refused when the partition moved, and the partition came
/// back before the next ack). KEYS: stream. ARGV: group, id... Returns the
/// IDs acknowledged. With `OWNER` defined (the unary Ack), also only an
/// entry pending with that consumer.
///
/// One XPENDING reads the oldest entries, as many as there are IDs: once
/// the first k of them are acknowledged, the next is the oldest pending.
const ORDERED_ACK_BODY: &str = r"
local done = {}
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', #ARGV - 1)
local k = 1
for i = 2, #ARGV do
  local row = oldest[k]
  if row and row[1] == ARGV[i] and (not OWNER or row[2] == OWNER) then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    done[#done + 1] = ARGV[i]
    k = k + 1
  end
end
if #done < #ARGV - 1 then redis.call('XPENDING', KEYS[1], ARGV[1]) end
return done
";

/// The unary Ack on a partition. While someone owns the partition (a
/// lease, the last key), as [`ORDERED_ACK_BODY`] for entries pending with
/// the owner; otherwise [`scripts::ACK_EACH`]. KEYS: stream, lease. ARGV:
/// group, id... Returns the IDs acknowledged.
static ACK_OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local OWNER = redis.call('GET', KEYS[2])
if OWNER then OWNER = string.sub(OWNER, 34) end
if not OWNER then
{each}
end
{ordered}",
        each = scripts::ACK_EACH_BODY,
        ordered = ORDERED_ACK_BODY,
    ))
});

/// Runs `body`, a script of [`scripts`], only while its caller holds a
/// lease: the lease is the last key and the holder the first argument,
/// both taken off before `body` sees KEYS and ARGV. Without the lease the
/// answer is an empty list (nothing done).
fn held(body: &str) -> Script {
    Script::new(&format!(
        r"
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[1] then return {{}} end
local keys, args = {{}}, {{}}
for i = 1, #KEYS - 1 do keys[i] = KEYS[i] end
for i = 2, #ARGV do args[i - 1] = ARGV[i] end
local KEYS, ARGV = keys, args
{body}"
    ))
}

/// [`ORDERED_ACK_BODY`] for a lease's holder.
static ACK_HELD: LazyLock<Script> =
    LazyLock::new(|| held(&format!("local OWNER = nil\n{ORDERED_ACK_BODY}")));

/// [`scripts::NACK`] for a lease's holder.
static NACK_HELD: LazyLock<Script> = LazyLock::new(|| held(scripts::NACK_BODY));

impl Broker {
    /// The sorted set of a group's ordered members on `stream`.
    fn members_key(&self, stream: &str, group: &str) -> String {
        self.aux_key(stream, &format!("members:{group}"))
    }

    /// The lease of partition stream `partition` for `group`.
    pub(super) fn lease_key(&self, partition: &str, group: &str) -> String {
        self.aux_key(partition, &format!("owner:{group}"))
    }

    /// Renews `consumer`'s membership for `ttl_ms` and answers the live
    /// members of `group`'s ordered consumption, sorted by name.
    pub async fn renew_membership(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ttl_ms: u64,
    ) -> Result<Vec<String>> {
        let mut call = MEMBERS.key(self.members_key(stream, group));
        call.arg(consumer).arg(ttl_ms);
        let value = self.invoke(&call, stream, Some(group)).await?;
        let mut members =
            reply::Cursor::new(value, "members")?.map(|v| reply::string(v, "member"))?;
        members.sort();
        Ok(members)
    }

    /// Whether `group` has ordered members on `stream` (live, or lapsed
    /// less than two lease times ago).
    pub async fn has_ordered_members(&self, stream: &str, group: &str) -> Result<bool> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.members_key(stream, group));
        Ok(reply::uint(self.query(&cmd, stream, Some(group)).await?, "EXISTS")? == 1)
    }

    /// Ends `consumer`'s membership at once (its last subscription here
    /// ended), so the others need not wait for it to lapse.
    pub async fn leave_membership(&self, stream: &str, group: &str, consumer: &str) -> Result<()> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.members_key(stream, group)).arg(consumer);
        self.query(&cmd, stream, Some(group)).await.map(drop)
    }

    /// Takes partition stream `partition`'s lease for `holder` if nobody
    /// holds it; true when taken.
    pub async fn acquire_lease(
        &self,
        partition: &str,
        group: &str,
        holder: &Holder,
        ttl_ms: u64,
    ) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lease_key(partition, group))
            .arg(holder.value())
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        let value = self.query(&cmd, partition, Some(group)).await?;
        Ok(!matches!(value, Value::Nil))
    }

    /// Extends `holder`'s lease by `ttl_ms` (0: releases it); false when
    /// `holder` no longer holds it.
    pub async fn keep_lease(
        &self,
        partition: &str,
        group: &str,
        holder: &Holder,
        ttl_ms: u64,
    ) -> Result<bool> {
        let mut call = KEEP.key(self.lease_key(partition, group));
        call.arg(holder.value()).arg(ttl_ms);
        let value = self.invoke(&call, partition, Some(group)).await?;
        Ok(reply::uint(value, "lease kept")? == 1)
    }

    /// The consumer owning partition stream `partition` in `group`, if any.
    pub async fn lease_owner(&self, partition: &str, group: &str) -> Result<Option<String>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.lease_key(partition, group));
        match self.query(&cmd, partition, Some(group)).await? {
            Value::Nil => Ok(None),
            value => {
                let text = reply::string(value, "lease")?;
                Ok(Some(
                    text.get(TOKEN_LEN + 1..).unwrap_or_default().to_owned(),
                ))
            }
        }
    }

    /// The unary Ack on a partition stream: as [`Broker::ack`], except
    /// that while someone owns the partition (ordered consumption) only
    /// the owner's entries are acknowledged, and in ID order (see
    /// [`ORDERED_ACK_BODY`]).
    pub async fn ack_owned(&self, partition: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        let mut call = ACK_OWNED.key(self.key(partition));
        call.key(self.lease_key(partition, group)).arg(group);
        let outcome = self.per_id(call, partition, group, ids, "ack").await?;
        Ok(outcome.done.len() as u64)
    }

    /// An ordered session's in-band acks: nothing is acknowledged unless
    /// `holder` holds the partition's lease, and then in ID order (see
    /// [`ORDERED_ACK_BODY`]).
    pub async fn ack_held(
        &self,
        partition: &str,
        group: &str,
        holder: &Holder,
        ids: &[StreamId],
    ) -> Result<Outcome> {
        let mut call = ACK_HELD.key(self.key(partition));
        call.key(self.lease_key(partition, group))
            .arg(holder.value())
            .arg(group);
        self.per_id(call, partition, group, ids, "ack").await
    }

    /// [`Broker::nack`] by `holder`: nothing is scheduled unless it holds
    /// the partition's lease.
    pub async fn nack_held(
        &self,
        partition: &str,
        group: &str,
        holder: &Holder,
        ids: &[StreamId],
        due_ms: i64,
    ) -> Result<Outcome> {
        let mut call = NACK_HELD.key(self.key(partition));
        call.key(self.nack_key(partition, group))
            .key(self.lease_key(partition, group))
            .arg(holder.value())
            .arg(group)
            .arg(holder.consumer())
            .arg(due_ms);
        self.per_id(call, partition, group, ids, "nack").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_keeps_its_consumer_name_after_the_token() {
        let holder = Holder::new("worker a");
        assert_eq!(holder.consumer(), "worker a");
        assert_eq!(holder.value().len(), TOKEN_LEN + 1 + "worker a".len());
        assert_ne!(Holder::new("worker a"), holder, "tokens differ");
    }
}
