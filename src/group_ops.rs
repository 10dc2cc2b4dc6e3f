//! Ack, Nack and Extend, whichever rpc they arrive on: the unary Ack, Nack
//! and Extend, or Consume's in-band messages.
//!
//! Each is one broker call, then the group's subscriptions on this gateway
//! are told (an ack frees `max_in_flight` room at once; a Nack brings the
//! next reclaim round forward to its due time), and acks are counted for
//! the metrics. Doing that here, once, keeps the two ways in step: a rule
//! added to one cannot be missing from the other.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::broker::{Broker, Holder, Outcome, now_ms};
use crate::error::{Error, Result};
use crate::ids::StreamId;
use crate::subscription::GroupSignals;

/// The group operations of one gateway; cheap to clone.
#[derive(Clone)]
pub struct GroupOps {
    broker: Broker,
    signals: Arc<GroupSignals>,
    /// Entries acknowledged, by either way.
    acked: Counter,
}

/// A Nack's `delay_ms` (the request field `field`) as a number of
/// milliseconds the clock can add: at most `i64::MAX`.
pub fn nack_delay(field: &str, delay_ms: u64) -> Result<i64> {
    i64::try_from(delay_ms).map_err(|_| Error::invalid(field, "is too large"))
}

impl GroupOps {
    /// Operations through `broker`, announced on `signals`, counted in
    /// `acked`.
    pub fn new(broker: Broker, signals: Arc<GroupSignals>, acked: Counter) -> GroupOps {
        GroupOps {
            broker,
            signals,
            acked,
        }
    }

    /// Acknowledges entries and says how many were pending (XACK's count).
    pub async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        let acked = self.broker.ack(stream, group, ids).await?;
        self.acked(stream, group, acked);
        Ok(acked)
    }

    /// The unary Ack on partition stream `partition`: as [`GroupOps::ack`],
    /// except for entries pending with a consumer that no longer owns the
    /// partition ([`Broker::ack_owned`]).
    pub async fn ack_owned(&self, partition: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        let acked = self.broker.ack_owned(partition, group, ids).await?;
        self.acked(partition, group, acked);
        Ok(acked)
    }

    /// Acknowledges entries and says which were pending; with a `holder`
    /// (ordered consumption), only while it holds the partition's lease.
    pub async fn ack_each(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&Holder>,
        ids: &[StreamId],
    ) -> Result<Outcome> {
        let outcome = match holder {
            None => self.broker.ack_each(stream, group, ids).await?,
            Some(holder) => self.broker.ack_held(stream, group, holder, ids).await?,
        };
        self.acked(stream, group, outcome.done.len() as u64);
        Ok(outcome)
    }

    /// Schedules entries pending for `consumer` for redelivery after
    /// `delay_ms` (see [`nack_delay`]); with a `holder` (ordered
    /// consumption, whose consumer it names), only while it holds the
    /// partition's lease.
    pub async fn nack(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        holder: Option<&Holder>,
        ids: &[StreamId],
        delay_ms: i64,
    ) -> Result<Outcome> {
        let due = now_ms().saturating_add(delay_ms);
        let outcome = match holder {
            None => self.broker.nack(stream, group, consumer, ids, due).await?,
            Some(holder) => {
                (self.broker)
                    .nack_held(stream, group, holder, ids, due)
                    .await?
            }
        };
        self.signals.nacked(stream, group, due);
        Ok(outcome)
    }

    /// Resets the idle time of entries pending for `consumer`.
    pub async fn extend(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Outcome> {
        self.broker.extend(stream, group, consumer, ids).await
    }

    fn acked(&self, stream: &str, group: &str, count: u64) {
        self.acked.inc_by(count);
        self.signals.acked(stream, group);
    }
}
