//! Non-blocking reads for the long-lived loops, on the shared connection.
//!
//! Subscribe and Tail never block in Redis on a connection of their own:
//! they read without `BLOCK` here, and when there is nothing to read they
//! wait for the [`crate::doorbell`] instead. So an idle subscription costs
//! no Redis connection, and these reads pipeline with every other request.

use redis::Value;

use super::Broker;
use super::reply::{self, RawEntry};
use crate::error::Result;
use crate::ids::StreamId;

/// Which entries an XREADGROUP asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `>`: entries never delivered to the group.
    New,
    /// This consumer's own pending entries with IDs above the given one.
    Pending(StreamId),
}

impl Broker {
    /// One XREADGROUP (no BLOCK) for `consumer` of `group`, at most `count`
    /// entries. Pending entries whose payload was deleted come back with
    /// `None` fields (only possible with [`ReadFrom::Pending`]).
    pub async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: u32,
        from: ReadFrom,
    ) -> Result<Vec<RawEntry>> {
        let id = match from {
            ReadFrom::New => ">".to_owned(),
            ReadFrom::Pending(after) => after.to_string(),
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg(id);
        let value: Value = self.query(&cmd, stream, Some(group)).await?;
        reply::read_reply(value)
    }

    /// One plain XREAD (no BLOCK) of entries after `after`, no group.
    pub async fn read_after(
        &self,
        stream: &str,
        after: StreamId,
        count: u32,
    ) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg(after.to_string());
        let value: Value = self.query(&cmd, stream, None).await?;
        reply::read_reply(value)
    }
}
