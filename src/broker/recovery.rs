//! Delivery guarantees beyond XREADGROUP/XACK: reclaim with dead letters,
//! Nack, Extend, the consumer's in-flight count, and the safe-trim floor.

use redis::Value;

use super::{Broker, reply, scripts};
use crate::error::{Error, Result};
use crate::ids::StreamId;
use crate::model::Entry;

/// What one reclaim round is allowed to do.
#[derive(Clone, Debug)]
pub struct ReclaimSpec<'a> {
    /// Group.
    pub group: &'a str,
    /// The consumer taking entries over.
    pub consumer: &'a str,
    /// Minimum idle time of an entry taken over by the idle scan.
    pub min_idle_ms: u64,
    /// Where the idle scan continues: `-` or `(id`.
    pub cursor: &'a str,
    /// Entries to take at most.
    pub count: u32,
    /// Dead-letter an entry already delivered this often (0 = never).
    pub max_deliveries: u32,
    /// Client name of the dead-letter stream.
    pub dead_letter_stream: &'a str,
}

/// The outcome of a reclaim round.
#[derive(Clone, Debug, Default)]
pub struct Reclaimed {
    /// Entries now owned by the consumer, with delivery counts.
    pub entries: Vec<Entry>,
    /// IDs found deleted while pending (recorded as dead letters).
    pub deleted_ids: Vec<String>,
    /// IDs moved to the dead-letter stream.
    pub dead_lettered: Vec<String>,
    /// Where the next idle scan starts (`-` after a complete scan).
    pub cursor: String,
}

impl Broker {
    /// The sorted set holding a group's Nack schedule.
    fn nack_key(&self, stream: &str, group: &str) -> String {
        self.aux_key(stream, &format!("nack:{group}"))
    }

    /// One atomic reclaim round (see `scripts::RECLAIM`).
    pub async fn reclaim(&self, stream: &str, spec: &ReclaimSpec<'_>) -> Result<Reclaimed> {
        let value: Value = scripts::RECLAIM
            .key(self.key(stream))
            .key(self.key(spec.dead_letter_stream))
            .key(self.nack_key(stream, spec.group))
            .arg(spec.group)
            .arg(spec.consumer)
            .arg(spec.min_idle_ms)
            .arg(spec.cursor)
            .arg(spec.count)
            .arg(spec.max_deliveries)
            .arg(super::now_ms())
            .arg(stream)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| Error::from_redis(&e, stream, Some(spec.group)))?;
        let mut parts = reply::array(value, "reclaim")?.into_iter();
        let (Some(cursor), Some(claimed), Some(deleted), Some(dead)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Internal("reclaim reply is too short".to_owned()));
        };
        let mut out = Reclaimed {
            cursor: match reply::string(cursor, "reclaim cursor")?.as_str() {
                "0-0" => "-".to_owned(),
                next => next.to_owned(),
            },
            ..Reclaimed::default()
        };
        for item in reply::array(claimed, "reclaimed entries")? {
            let mut it = reply::array(item, "reclaimed entry")?.into_iter();
            let (Some(id), Some(fields), Some(count)) = (it.next(), it.next(), it.next()) else {
                return Err(Error::Internal("reclaimed entry is too short".to_owned()));
            };
            let raw = reply::raw_entry(Value::Array(vec![id, fields]))?;
            let mut entry = Entry::from_pairs(raw.0, raw.1.unwrap_or_default());
            entry.delivery_count = reply::uint(count, "delivery count")?;
            entry.redelivered = true;
            out.entries.push(entry);
        }
        out.deleted_ids = ids(deleted)?;
        out.dead_lettered = ids(dead)?;
        Ok(out)
    }

    /// Schedules entries pending for `consumer` for redelivery at `due_ms`;
    /// returns how many were pending for it.
    pub async fn nack(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
        due_ms: i64,
    ) -> Result<u64> {
        let mut call = scripts::NACK.key(self.key(stream));
        call.key(self.nack_key(stream, group))
            .arg(group)
            .arg(consumer)
            .arg(due_ms);
        for id in ids {
            call.arg(id.to_string());
        }
        let n: Value = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| Error::from_redis(&e, stream, Some(group)))?;
        reply::uint(n, "nack count")
    }

    /// Resets the idle time of entries pending for `consumer`; returns how
    /// many were extended.
    pub async fn extend(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<u64> {
        let mut call = scripts::EXTEND.key(self.key(stream));
        call.arg(group).arg(consumer);
        for id in ids {
            call.arg(id.to_string());
        }
        let n: Value = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| Error::from_redis(&e, stream, Some(group)))?;
        reply::uint(n, "extend count")
    }

    /// How many entries are pending for `consumer` (XPENDING summary).
    pub async fn consumer_pending(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(self.key(stream)).arg(group);
        let summary = reply::array(
            self.query(&cmd, stream, Some(group)).await?,
            "XPENDING summary",
        )?;
        let Some(per_consumer) = summary.into_iter().nth(3) else {
            return Err(Error::Internal("XPENDING summary is too short".to_owned()));
        };
        for row in reply::array(per_consumer, "XPENDING consumers")? {
            let mut it = reply::array(row, "XPENDING consumer row")?.into_iter();
            if let (Some(name), Some(count)) = (it.next(), it.next())
                && reply::bytes(name, "consumer name")? == consumer.as_bytes()
            {
                return reply::uint(count, "consumer pending");
            }
        }
        Ok(0)
    }

    /// The lowest ID some group still needs: its oldest pending entry, or
    /// the entry after its last-delivered ID. `None` when the stream has no
    /// groups. Everything below it is delivered to and acked by every group.
    pub async fn safe_trim_floor(&self, stream: &str) -> Result<Option<StreamId>> {
        let mut floor: Option<StreamId> = None;
        for group in self.list_groups(stream).await? {
            let needed = if group.pending > 0 {
                let mut cmd = redis::cmd("XPENDING");
                cmd.arg(self.key(stream))
                    .arg(&group.name)
                    .arg("-")
                    .arg("+")
                    .arg(1);
                let rows = reply::array(
                    self.query(&cmd, stream, Some(&group.name)).await?,
                    "XPENDING",
                )?;
                match rows.into_iter().next() {
                    Some(row) => StreamId::parse("id", &super::admin::pending_row(row)?.id)?,
                    None => delivered_floor(&group.last_delivered_id)?,
                }
            } else {
                delivered_floor(&group.last_delivered_id)?
            };
            floor = Some(floor.map_or(needed, |f| f.min(needed)));
        }
        Ok(floor)
    }
}

/// The first ID after a group's cursor.
fn delivered_floor(last_delivered: &str) -> Result<StreamId> {
    let id = StreamId::parse("last-delivered-id", last_delivered)?;
    Ok(id.successor().unwrap_or(StreamId::MAX))
}

fn ids(value: Value) -> Result<Vec<String>> {
    reply::array(value, "id list")?
        .into_iter()
        .map(|v| reply::string(v, "id"))
        .collect()
}
