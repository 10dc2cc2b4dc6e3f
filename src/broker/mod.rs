//! Typed Redis Streams operations: the only place that speaks Redis.
//!
//! Every command the gateway sends is built here, and every reply is
//! decoded here (by [`reply`]'s cursor) into finished domain values:
//! [`Entry`] with its [`StreamId`], delivery count and `redelivered` flag,
//! group and consumer rows. The layers above never see RESP.
//!
//! Everything runs on one reconnecting multiplexed connection shared by all
//! requests and read loops, so commands pipeline onto a single socket; on a
//! Redis Cluster, on one such connection per node, routed by slot (see
//! [`link`]). The exceptions are the doorbell's connections, each of its
//! own: a tracking connection per node ([`Tracking`]), whose pushes belong
//! to nobody else, or a blocking XREAD ([`Waiter`]), which on the shared
//! connection would stall every command queued behind it.
//!
//! Cluster slots: a stream's key has no hash tag (stream names cannot
//! contain braces), and every bookkeeping key carries the stream key as its
//! hash tag (`<prefix>{<stream key>}:...`), so every command and script
//! touching one stream stays in that stream's slot. The one exception, the
//! dead-letter stream, is written in a step of its own (see [`recovery`]).

mod admin;
mod durable;
mod layout;
mod leases;
mod link;
mod ordered_read;
#[cfg(test)]
mod ordered_tests;
mod produce;
mod reads;
mod recovery;
mod reply;
mod scripts;
pub mod server_info;
mod streams;
mod tracking;
mod waiter;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Client, RedisError, Value};

use durable::Durable;
use link::{Backend, Link};

pub use admin::{ConsumerInfo, GroupInfo, PendingEntry, PendingFilter, StreamInfo};
pub use layout::{Layout, partition_stream};
pub use leases::Holder;
pub use link::{Node, slot_of};
pub use ordered_read::{Ordered, OrderedRead, Scan};
pub use recovery::{Outcome, ReclaimSpec};
pub use streams::StreamSummary;
pub use tracking::{Armed, Invalidation, Refused, Tracking};
pub use waiter::{Waiter, WaiterHandle};

use crate::error::{Error, Result};
use crate::ids::{IdRange, StreamId};
use crate::model::{Delivered, Entry};
use reply::Cursor;

/// How the broker talks to Redis.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// `redis://` or `rediss://` URL; with `cluster`, one or more
    /// comma-separated seed node URLs.
    pub url: String,
    /// Speak Redis Cluster: discover the topology from the seeds and route
    /// every command by slot.
    pub cluster: bool,
    /// Prepended to every client stream name to form its Redis key.
    pub key_prefix: String,
    /// How long a command may wait for its reply before it fails.
    pub response_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long an idempotency key is remembered.
    pub dedup_window: Duration,
    /// Replicas that must hold a produced entry before Produce answers
    /// (0: none).
    pub wait_replicas: u32,
    /// Certificates for a `rediss://` URL.
    pub tls: crate::tls::RedisTls,
}

/// A length cap applied while appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Keep at most about this many entries.
    pub max_len: u64,
    /// `MAXLEN =` instead of `MAXLEN ~`.
    pub exact: bool,
}

/// What XTRIM keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrimTo {
    /// The newest `n` entries.
    MaxLen(u64),
    /// Entries with IDs at or above this one.
    MinId(StreamId),
}

/// A Reap request after validation.
#[derive(Clone, Debug)]
pub struct ReapSpec {
    /// Consumer that takes the entries over.
    pub consumer: String,
    /// Minimum idle time of a claimed entry.
    pub min_idle_ms: u64,
    /// Entries examined per XAUTOCLAIM.
    pub page_count: u32,
    /// XAUTOCLAIM calls at most.
    pub max_pages: u32,
    /// Scan cursor.
    pub start: StreamId,
}

/// What a Reap did.
#[derive(Clone, Debug, Default)]
pub struct Reaped {
    /// Entries now owned by the target consumer, with delivery counts.
    pub claimed: Vec<Entry>,
    /// Pending IDs whose payload no longer exists; Redis dropped them from
    /// the PEL.
    pub deleted_ids: Vec<StreamId>,
    /// Where to continue; `0-0` when the scan is complete.
    pub next_start_id: StreamId,
    /// XAUTOCLAIM calls made (at most `ReapSpec::max_pages`).
    pub pages: u32,
}

/// Handle to Redis; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    /// The standalone server's client (the doorbell opens its connections
    /// from it); `None` on a cluster, where they are opened per node.
    client: Option<Client>,
    backend: Backend,
    /// Connections for writes that wait for replicas
    /// (`--produce-wait-replicas`); `None` when writes need not wait.
    durable: Option<Arc<Durable>>,
    options: BrokerOptions,
    server: Arc<server_info::ServerCheck>,
}

impl Broker {
    /// Prepares the shared connection without waiting for Redis: the
    /// gateway starts even when Redis is not up yet (health says
    /// NOT_SERVING until it answers). Fails only on a malformed URL.
    pub async fn connect(options: BrokerOptions) -> Result<Broker> {
        let client = match options.cluster {
            true => None,
            false => Some(options.tls.client(&options.url)?),
        };
        Ok(Broker {
            client,
            backend: Backend::open(&options)?,
            durable: Durable::open(&options)?.map(Arc::new),
            options,
            server: Arc::default(),
        })
    }

    /// The shared connection, once the server has been found fit to serve
    /// from (see [`server_info`]): every command goes through here, so an
    /// unsupported server fails every request (and the health check) with
    /// FAILED_PRECONDITION naming it.
    async fn conn(&self) -> Result<Link> {
        let link = self.backend.link().await?;
        self.server.ensure(&link).await?;
        Ok(link)
    }

    /// Whether the broker speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.options.cluster
    }

    /// The cluster slot of a stream (`None` on a standalone server, where
    /// slots do not matter).
    pub fn slot(&self, stream: &str) -> Option<u16> {
        self.options
            .cluster
            .then(|| slot_of(self.key(stream).as_bytes()))
    }

    /// The Redis key of a client stream name.
    pub fn key(&self, stream: &str) -> String {
        format!("{}{}", self.options.key_prefix, stream)
    }

    /// A bookkeeping key of a stream: `<prefix>{<stream key>}:<what>`. The
    /// hash tag keeps it in the stream's cluster slot.
    fn aux_key(&self, stream: &str, what: &str) -> String {
        format!(
            "{}{{{}}}:{}",
            self.options.key_prefix,
            self.key(stream),
            what
        )
    }

    /// Runs one command on the shared connection.
    async fn query(&self, cmd: &redis::Cmd, stream: &str, group: Option<&str>) -> Result<Value> {
        cmd.query_async(&mut self.conn().await?)
            .await
            .map_err(|e| Error::from_redis(&e, stream, group))
    }

    /// Runs one of [`scripts`] on the shared connection.
    async fn invoke(
        &self,
        call: &redis::ScriptInvocation<'_>,
        stream: &str,
        group: Option<&str>,
    ) -> Result<Value> {
        call.invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| Error::from_redis(&e, stream, group))
    }

    /// Runs a pipeline whose replies may each be an error, returning the
    /// first error as the result.
    async fn query_pipeline(
        &self,
        pipe: &redis::Pipeline,
        stream: &str,
        group: Option<&str>,
    ) -> Result<Vec<Value>> {
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| Error::from_redis(&e, stream, group))?;
        checked(replies, stream, group)
    }

    /// PING on the shared connection: does Redis answer right now? On a
    /// cluster, every master must answer.
    pub async fn ping(&self) -> Result<()> {
        self.conn()
            .await?
            .on_all_masters(&redis::cmd("PING"))
            .await
            .map(drop)
            .map_err(|e| Error::from_redis(&e, "", None))
    }

    /// Acknowledges entries; returns how many were pending. XACK answers 0
    /// for a group that does not exist; when fewer entries than asked were
    /// acked, one more call tells a mistyped group (NOT_FOUND) from entries
    /// that simply were not pending.
    pub async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.key(stream)).arg(group);
        for id in ids {
            cmd.arg(id.to_string());
        }
        let acked = reply::uint(self.query(&cmd, stream, Some(group)).await?, "XACK count")?;
        if acked < ids.len() as u64 {
            let mut check = redis::cmd("XPENDING");
            check.arg(self.key(stream)).arg(group);
            self.query(&check, stream, Some(group)).await?;
        }
        Ok(acked)
    }

    /// Claims idle pending entries for `spec.consumer` page by page
    /// (XAUTOCLAIM), then reads the delivery count of each claimed entry.
    pub async fn reap(&self, stream: &str, group: &str, spec: &ReapSpec) -> Result<Reaped> {
        let key = self.key(stream);
        let mut out = Reaped::default();
        let mut cursor = spec.start;
        for _ in 0..spec.max_pages {
            out.pages += 1;
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(&key)
                .arg(group)
                .arg(&spec.consumer)
                .arg(spec.min_idle_ms)
                .arg(cursor.to_string())
                .arg("COUNT")
                .arg(spec.page_count);
            let mut parts =
                Cursor::new(self.query(&cmd, stream, Some(group)).await?, "XAUTOCLAIM")?;
            cursor = parts.next_id()?;
            for (id, payload) in reply::raw_entries(parts.next_value()?)? {
                match payload {
                    Some(pairs) => out.claimed.push(Entry::from_pairs(id, pairs)),
                    None => out.deleted_ids.push(id),
                }
            }
            // Entries deleted while pending: already gone from the PEL.
            out.deleted_ids
                .extend(reply::ids(parts.next_value()?, "XAUTOCLAIM deleted")?);
            parts.finish()?;
            if cursor == StreamId::MIN {
                break;
            }
        }
        out.claimed = self
            .with_delivery_counts(stream, group, out.claimed)
            .await?;
        out.next_start_id = cursor;
        Ok(out)
    }

    /// Marks entries as re-delivered with their delivery counts from the
    /// group's PEL, read in one pipelined round trip. An entry no longer
    /// pending (acked or claimed away meanwhile) gets count 0: "unknown".
    pub(super) async fn with_delivery_counts(
        &self,
        stream: &str,
        group: &str,
        entries: Vec<Entry>,
    ) -> Result<Vec<Entry>> {
        if entries.is_empty() {
            return Ok(entries);
        }
        let key = self.key(stream);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for entry in &entries {
            let id = entry.id.to_string();
            pipe.cmd("XPENDING")
                .arg(&key)
                .arg(group)
                .arg(&id)
                .arg(&id)
                .arg(1);
        }
        let replies = self.query_pipeline(&pipe, stream, Some(group)).await?;
        let mut counts = HashMap::with_capacity(replies.len());
        for rows in replies {
            for row in Cursor::new(rows, "XPENDING")?.rows("XPENDING row") {
                let row = admin::pending_row(row?)?;
                counts.insert(row.id, row.delivery_count);
            }
        }
        Ok(entries
            .into_iter()
            .map(|entry| {
                let count = counts.get(&entry.id).copied().unwrap_or(0);
                entry.delivered(Delivered::Again(count))
            })
            .collect())
    }

    /// One page of history in either direction (XRANGE / XREVRANGE).
    pub async fn range(
        &self,
        stream: &str,
        range: IdRange,
        reverse: bool,
        count: u64,
    ) -> Result<Vec<Entry>> {
        let (low, high) = (range.low.to_string(), range.high.to_string());
        let mut cmd = redis::cmd(if reverse { "XREVRANGE" } else { "XRANGE" });
        cmd.arg(self.key(stream));
        if reverse {
            cmd.arg(high).arg(low);
        } else {
            cmd.arg(low).arg(high);
        }
        cmd.arg("COUNT").arg(count);
        reply::entries(self.query(&cmd, stream, None).await?)
    }

    /// The ID of the stream's newest entry; `0-0` for an empty or missing
    /// stream. Every entry appended later has a higher ID.
    pub async fn last_entry_id(&self, stream: &str) -> Result<StreamId> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.key(stream))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        newest_id(self.query(&cmd, stream, None).await?)
    }

    /// The newest entry ID of each stream (as [`Broker::last_entry_id`]),
    /// in one pipelined round trip.
    pub async fn last_entry_ids(&self, streams: &[&str]) -> Result<Vec<StreamId>> {
        let mut pipe = redis::pipe();
        for stream in streams {
            pipe.cmd("XREVRANGE")
                .arg(self.key(stream))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        self.query_pipeline(&pipe, "(doorbell)", None)
            .await?
            .into_iter()
            .map(newest_id)
            .collect()
    }

    /// Trims a stream, but never below the lowest entry some group still
    /// needs (see [`Broker::safe_trim_floor`]); returns how many entries
    /// were removed. A group created or rewound between the floor's
    /// computation and the trim is not protected.
    pub async fn safe_trim(
        &self,
        stream: &str,
        to: &TrimTo,
        exact: bool,
        limit: u64,
    ) -> Result<u64> {
        let Some(floor) = self.safe_trim_floor(stream).await? else {
            return self.trim(stream, to, exact, limit).await;
        };
        let wanted = match to {
            TrimTo::MinId(id) => *id,
            TrimTo::MaxLen(0) => StreamId::MAX,
            TrimTo::MaxLen(n) => {
                // The oldest entry a MAXLEN trim would keep.
                let mut cmd = redis::cmd("XREVRANGE");
                cmd.arg(self.key(stream))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(*n);
                let kept = reply::raw_entries(self.query(&cmd, stream, None).await?)?;
                match kept.last() {
                    Some((id, _)) if kept.len() as u64 == *n => *id,
                    _ => return Ok(0),
                }
            }
        };
        self.trim(stream, &TrimTo::MinId(wanted.min(floor)), exact, limit)
            .await
    }

    /// Trims a stream; returns how many entries were removed.
    pub async fn trim(&self, stream: &str, to: &TrimTo, exact: bool, limit: u64) -> Result<u64> {
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(self.key(stream));
        match to {
            TrimTo::MaxLen(n) => cmd.arg("MAXLEN").arg(if exact { "=" } else { "~" }).arg(*n),
            TrimTo::MinId(id) => cmd
                .arg("MINID")
                .arg(if exact { "=" } else { "~" })
                .arg(id.to_string()),
        };
        if limit > 0 {
            cmd.arg("LIMIT").arg(limit);
        }
        reply::uint(self.query(&cmd, stream, None).await?, "XTRIM count")
    }
}

/// The ID in an `XREVRANGE ... COUNT 1` reply; `0-0` for none.
fn newest_id(reply: Value) -> Result<StreamId> {
    let newest = reply::raw_entries(reply)?;
    Ok(newest.first().map_or(StreamId::MIN, |(id, _)| *id))
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A pipeline's replies, or its first error reply as the error.
pub(super) fn checked(
    replies: Vec<Value>,
    stream: &str,
    group: Option<&str>,
) -> Result<Vec<Value>> {
    replies
        .into_iter()
        .map(|v| match v {
            Value::ServerError(e) => Err(Error::from_redis(&RedisError::from(e), stream, group)),
            other => Ok(other),
        })
        .collect()
}
