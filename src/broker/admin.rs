//! Consumer-group administration and inspection (XGROUP, XINFO, XPENDING).

use redis::Value;

use super::reply::{self, Cursor};
use super::{Broker, scripts};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, IdRange, StreamId};

/// XINFO STREAM, reduced to what the API exposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Number of entries.
    pub length: u64,
    /// Oldest entry's ID; `None` when the stream is empty.
    pub first_entry_id: Option<StreamId>,
    /// Newest entry's ID; `None` when the stream is empty.
    pub last_entry_id: Option<StreamId>,
    /// Last ID generated for the stream.
    pub last_generated_id: StreamId,
    /// Number of consumer groups.
    pub group_count: u64,
}

/// One row of XINFO GROUPS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Number of consumers.
    pub consumers: u64,
    /// Size of the group's PEL.
    pub pending: u64,
    /// Group cursor.
    pub last_delivered_id: StreamId,
    /// Undelivered entries, when Redis can tell.
    pub lag: Option<u64>,
    /// Logical read counter, when Redis can tell.
    pub entries_read: Option<u64>,
}

/// One row of XINFO CONSUMERS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Entries pending for this consumer.
    pub pending: u64,
    /// Milliseconds since the last attempted interaction.
    pub idle_ms: u64,
    /// Milliseconds since the last successful interaction (Redis >= 7.2).
    pub inactive_ms: Option<u64>,
}

/// One row of extended XPENDING.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingEntry {
    /// Entry ID.
    pub id: StreamId,
    /// Owning consumer.
    pub consumer: String,
    /// Milliseconds since last delivery.
    pub idle_ms: u64,
    /// Times delivered.
    pub delivery_count: u64,
}

/// Which pending entries ListPending returns.
#[derive(Clone, Debug)]
pub struct PendingFilter {
    /// Only this consumer's.
    pub consumer: Option<String>,
    /// Only entries idle at least this long (0 = all).
    pub min_idle_ms: u64,
    /// ID range.
    pub range: IdRange,
    /// Maximum rows.
    pub count: u32,
}

impl Broker {
    /// XGROUP CREATE; returns false if the group already existed.
    pub async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<bool> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.key(stream))
            .arg(group)
            .arg(start.to_arg());
        if mkstream {
            cmd.arg("MKSTREAM");
        }
        match cmd.query_async::<Value>(&mut self.conn().await?).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
            Err(e) => Err(Error::from_redis(&e, stream, Some(group))),
        }
    }

    /// XGROUP DESTROY; returns false if there was no such group.
    pub async fn delete_group(&self, stream: &str, group: &str) -> Result<bool> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("DESTROY").arg(self.key(stream)).arg(group);
        Ok(reply::uint(
            self.query(&cmd, stream, Some(group)).await?,
            "XGROUP DESTROY",
        )? > 0)
    }

    /// XGROUP SETID.
    pub async fn set_group_cursor(&self, stream: &str, group: &str, id: GroupStart) -> Result<()> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("SETID")
            .arg(self.key(stream))
            .arg(group)
            .arg(id.to_arg());
        self.query(&cmd, stream, Some(group)).await.map(drop)
    }

    /// XINFO STREAM.
    pub async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(self.key(stream));
        let mut info = StreamInfo::default();
        for (name, value) in reply::fields(self.query(&cmd, stream, None).await?, "XINFO STREAM")? {
            match name.as_str() {
                "length" => info.length = reply::uint(value, "length")?,
                "last-generated-id" => info.last_generated_id = reply::id(value)?,
                "groups" => info.group_count = reply::uint(value, "groups")?,
                "first-entry" => info.first_entry_id = entry_id(value)?,
                "last-entry" => info.last_entry_id = entry_id(value)?,
                _ => {}
            }
        }
        Ok(info)
    }

    /// XINFO GROUPS.
    pub async fn list_groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(self.key(stream));
        let rows = Cursor::new(self.query(&cmd, stream, None).await?, "XINFO GROUPS")?;
        rows.map(|row| {
            let mut g = GroupInfo::default();
            for (name, value) in reply::fields(row, "XINFO GROUPS row")? {
                match name.as_str() {
                    "name" => g.name = reply::string(value, "name")?,
                    "consumers" => g.consumers = reply::uint(value, "consumers")?,
                    "pending" => g.pending = reply::uint(value, "pending")?,
                    "last-delivered-id" => g.last_delivered_id = reply::id(value)?,
                    "lag" => g.lag = reply::opt_uint(value, "lag")?,
                    "entries-read" => g.entries_read = reply::opt_uint(value, &name)?,
                    _ => {}
                }
            }
            Ok(g)
        })
    }

    /// XINFO CONSUMERS.
    pub async fn list_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS").arg(self.key(stream)).arg(group);
        let rows = Cursor::new(
            self.query(&cmd, stream, Some(group)).await?,
            "XINFO CONSUMERS",
        )?;
        rows.map(|row| {
            let mut c = ConsumerInfo::default();
            for (name, value) in reply::fields(row, "XINFO CONSUMERS row")? {
                match name.as_str() {
                    "name" => c.name = reply::string(value, "name")?,
                    "pending" => c.pending = reply::uint(value, "pending")?,
                    "idle" => c.idle_ms = reply::uint(value, "idle")?,
                    // -1 means "never"; absent before Redis 7.2.
                    "inactive" => c.inactive_ms = u64::try_from(reply::int(value, &name)?).ok(),
                    _ => {}
                }
            }
            Ok(c)
        })
    }

    /// Extended XPENDING with optional IDLE and consumer filters.
    pub async fn list_pending(
        &self,
        stream: &str,
        group: &str,
        filter: &PendingFilter,
    ) -> Result<Vec<PendingEntry>> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(self.key(stream)).arg(group);
        if filter.min_idle_ms > 0 {
            cmd.arg("IDLE").arg(filter.min_idle_ms);
        }
        cmd.arg(filter.range.low.to_string())
            .arg(filter.range.high.to_string())
            .arg(filter.count);
        if let Some(consumer) = &filter.consumer {
            cmd.arg(consumer);
        }
        Cursor::new(self.query(&cmd, stream, Some(group)).await?, "XPENDING")?
            .rows("XPENDING row")
            .map(|row| pending_row(row?))
            .collect()
    }

    /// Hands `consumer`'s pending entries to `handover_to` (when given) and
    /// removes the consumer, atomically. Returns how many were handed over.
    pub async fn remove_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        handover_to: Option<&str>,
    ) -> Result<u64> {
        let result: redis::RedisResult<Value> = scripts::REMOVE_CONSUMER
            .key(self.key(stream))
            .arg(group)
            .arg(consumer)
            .arg(handover_to.unwrap_or(""))
            .invoke_async(&mut self.conn().await?)
            .await;
        let value = match result {
            Ok(v) => v,
            Err(e) if e.code() == Some("STREAMGATE_NOCONSUMER") => {
                return Err(Error::ConsumerNotFound {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                    consumer: consumer.to_owned(),
                });
            }
            Err(e) if e.code() == Some("STREAMGATE_PENDING") => {
                return Err(Error::FailedPrecondition(format!(
                    "consumer {consumer:?} of group {group:?} on stream {stream:?} has pending \
                     entries; removing it would destroy them: set handover_to"
                )));
            }
            Err(e) => return Err(Error::from_redis(&e, stream, Some(group))),
        };
        let mut parts = Cursor::new(value, "remove consumer")?;
        let handed_over = parts.next_uint()?;
        // What DELCONSUMER destroyed: nothing, since the script hands every
        // pending entry over (or refuses) first.
        parts.next_uint()?;
        parts.finish()?;
        Ok(handed_over)
    }
}

/// The ID of XINFO STREAM's first-entry / last-entry; `None` for nil.
fn entry_id(value: Value) -> Result<Option<StreamId>> {
    match value {
        Value::Nil => Ok(None),
        other => Ok(Some(reply::raw_entry(other)?.0)),
    }
}

/// One `[id, consumer, idle, count]` row of extended XPENDING.
pub(super) fn pending_row(mut row: Cursor) -> Result<PendingEntry> {
    let entry = PendingEntry {
        id: row.next_id()?,
        consumer: row.next_string()?,
        idle_ms: row.next_uint()?,
        delivery_count: row.next_uint()?,
    };
    row.finish()?;
    Ok(entry)
}
