//! Non-blocking reads for the live streams, on the shared connection.
//!
//! Subscribe, Tail and Consume never block in Redis on a connection of
//! their own: they read without `BLOCK` here, and when there is nothing to
//! read they wait for the [`crate::doorbell`] instead. So an idle
//! subscription costs no Redis connection, and these reads pipeline with
//! every other request.

use redis::Value;

use super::{Broker, reply};
use crate::error::Result;
use crate::ids::StreamId;
use crate::model::{Delivered, Entry};

/// One page of a consumer's own pending entries.
#[derive(Debug, Default)]
pub struct PendingPage {
    /// The entries whose payload still exists, marked as re-deliveries with
    /// their delivery counts.
    pub entries: Vec<Entry>,
    /// The highest ID the page covered (deleted entries included), where
    /// the next page continues; `None` when the PEL has nothing further.
    pub last: Option<StreamId>,
}

impl Broker {
    /// XREADGROUP `>` (no BLOCK): at most `count` entries never delivered
    /// to `group`, now delivered to `consumer`.
    pub async fn read_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: u32,
    ) -> Result<Vec<Entry>> {
        let raw = self.read_group(stream, group, consumer, count, ">").await?;
        // `>` never returns deleted entries: nothing is dropped here.
        Ok(reply::present(raw)
            .into_iter()
            .map(|entry| entry.delivered(Delivered::First))
            .collect())
    }

    /// The next page of `consumer`'s own pending entries after `after`
    /// (XREADGROUP with an ID), with their delivery counts. Entries whose
    /// payload was trimmed cannot be delivered; they are skipped here, and
    /// Reap and reclaim rounds report them and drop them from the PEL.
    pub async fn read_pending(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: StreamId,
        count: u32,
    ) -> Result<PendingPage> {
        let raw = self
            .read_group(stream, group, consumer, count, &after.to_string())
            .await?;
        let last = raw.last().map(|(id, _)| *id);
        let entries = reply::present(raw);
        Ok(PendingPage {
            entries: self.with_delivery_counts(stream, group, entries).await?,
            last,
        })
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: u32,
        from: &str,
    ) -> Result<Vec<(StreamId, Option<reply::Pairs>)>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg(from);
        let value: Value = self.query(&cmd, stream, Some(group)).await?;
        reply::read_reply(value)
    }

    /// One plain XREAD (no BLOCK, no group) of at most `count` entries after
    /// `after`.
    pub async fn read_after(
        &self,
        stream: &str,
        after: StreamId,
        count: u32,
    ) -> Result<Vec<Entry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.key(stream))
            .arg(after.to_string());
        let value: Value = self.query(&cmd, stream, None).await?;
        Ok(reply::present(reply::read_reply(value)?))
    }
}
