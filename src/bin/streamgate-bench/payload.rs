//! The event every scenario sends, on both sides: a type and three fields,
//! about 60 bytes of names and values. One field carries the send instant,
//! so a receiver computes produce-to-receive latency from the entry alone,
//! with no map of IDs shared with the producer (which would race with a
//! receiver that sees the entry before the producer sees its ID).
//!
//! Direct XADDs write the same fields the gateway writes (`type`, `ts_ms`
//! and the user fields), so Redis does identical work on both sides.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use streamgate::pb;

/// Event type of every bench event.
pub const EVENT_TYPE: &str = "bench.event";
/// Field holding the send instant: nanoseconds since the bench started.
pub const SENT_FIELD: &str = "sent_ns";
/// Filler that brings the event to about 60 bytes.
const BODY: &str = "payload-bytes!";

/// Nanoseconds since the first call, on the monotonic clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The three user fields of event `seq`, stamped now.
fn fields(seq: u64) -> [(&'static str, String); 3] {
    [
        (SENT_FIELD, format!("{:013}", now_ns())),
        ("key", format!("k{:07}", seq % 10_000_000)),
        ("body", BODY.to_owned()),
    ]
}

/// Event `seq` for a Produce request.
pub fn event(seq: u64) -> pb::Event {
    pb::Event {
        r#type: EVENT_TYPE.to_owned(),
        fields: fields(seq)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ..Default::default()
    }
}

/// The partition key of event `seq` in S8: the same text as its `key`
/// field, so that consecutive events cycle over as many keys as a caller
/// sends events.
pub fn partition_key(seq: u64) -> String {
    format!("k{:07}", seq % 10_000_000)
}

/// Event `seq` with [`partition_key`] as its `Event.key` (S8), which picks
/// its partition on a partitioned stream and is stored as the field
/// `partition_key`.
pub fn keyed_event(seq: u64) -> pb::Event {
    pb::Event {
        key: partition_key(seq),
        ..event(seq)
    }
}

/// `XADD key [MAXLEN ~ cap] * type .. ts_ms .. <fields of seq>`, as the
/// gateway builds it.
pub fn xadd(key: &str, cap: Option<u64>, seq: u64) -> redis::Cmd {
    xadd_with(key, cap, seq, false)
}

/// [`xadd`] of [`keyed_event`]: with the `partition_key` field the
/// gateway writes after `ts_ms`.
pub fn keyed_xadd(key: &str, cap: Option<u64>, seq: u64) -> redis::Cmd {
    xadd_with(key, cap, seq, true)
}

fn xadd_with(key: &str, cap: Option<u64>, seq: u64, keyed: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key);
    if let Some(cap) = cap {
        cmd.arg("MAXLEN").arg("~").arg(cap);
    }
    cmd.arg("*")
        .arg("type")
        .arg(EVENT_TYPE)
        .arg("ts_ms")
        .arg(unix_ms());
    if keyed {
        cmd.arg("partition_key").arg(partition_key(seq));
    }
    for (name, value) in fields(seq) {
        cmd.arg(name).arg(value);
    }
    cmd
}

/// The partition of an event with partition key `key` on a stream of
/// `partitions` partitions, as the gateway picks it (docs/partitions.md):
/// FNV-1a over the key's bytes, 32 bits, modulo the count.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let hash = key.bytes().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % partitions
}

/// A pipeline of `n` XADDs: one round trip, like a batched Produce.
pub fn xadd_pipeline(key: &str, cap: Option<u64>, first_seq: u64, n: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for seq in first_seq..first_seq + n {
        pipe.add_command(xadd(key, cap, seq));
    }
    pipe
}

/// The send instant carried in a [`SENT_FIELD`] value and the microseconds
/// since; the instant lets a caller skip events sent before its
/// measurement began. `None` when the value is not one of ours.
pub fn sent_and_elapsed_us(sent: &str) -> Option<(u64, u64)> {
    let at: u64 = sent.parse().ok()?;
    Some((at, now_ns().saturating_sub(at) / 1000))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}
