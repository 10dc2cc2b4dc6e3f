//! The Subscribe read loop: a remote client as a consumer-group member.
//!
//! Each subscription is a task with a Redis connection of its own (see
//! [`crate::broker::Reader`]). Every turn of the loop first reserves room
//! in the client's buffer, then reads; so the gateway never holds more than
//! one batch the client has not taken, and a client that went away is
//! noticed before the next read, at most one block period later.
//!
//! Nothing is acknowledged here. An entry read but not delivered (client
//! gone between read and send) stays in the group's pending entries list,
//! where `pending_first` or Reap recovers it.
//!
//! A blocking read is never cancelled midway: Redis would still move the
//! entries it returns into the PEL. Instead `BLOCK` is bounded and the
//! shutdown signal is checked between reads.

use std::time::Duration;

use crate::broker::{Broker, ReadFrom, Reader};
use crate::delivery::{self, Delivery, ReadLoop, Turn};
use crate::error::Result;
use crate::ids::{GroupStart, StreamId};
use crate::model::Entry;
use crate::shutdown::Shutdown;

/// A validated Subscribe request.
#[derive(Clone, Debug)]
pub struct SubscribeSpec {
    /// Client stream name.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// Consumer name.
    pub consumer: String,
    /// XREADGROUP COUNT.
    pub batch_size: u32,
    /// Create the group (MKSTREAM) when missing.
    pub create_group: bool,
    /// Start of a group created here.
    pub group_start: GroupStart,
    /// Re-deliver this consumer's PEL before new entries.
    pub pending_first: bool,
}

/// Joins the group (creating it if asked to) and starts the read loop; its
/// batches and final error arrive on the returned stream. Setup happens
/// before this returns, so an entry produced after the client got its
/// response headers is never "before" a group created here. `block` bounds
/// each blocking read.
pub async fn start(
    broker: Broker,
    spec: SubscribeSpec,
    block: Duration,
    shutdown: Shutdown,
) -> Result<Delivery<Vec<Entry>>> {
    let reads = Subscription::open(broker, spec, block).await?;
    Ok(delivery::start(reads, shutdown))
}

/// One consumer's read loop.
struct Subscription {
    broker: Broker,
    spec: SubscribeSpec,
    reader: Reader,
    from: ReadFrom,
}

impl Subscription {
    /// Creates the group if asked to and opens the dedicated connection.
    async fn open(broker: Broker, spec: SubscribeSpec, block: Duration) -> Result<Subscription> {
        if spec.create_group {
            broker
                .create_group(&spec.stream, &spec.group, spec.group_start, true)
                .await?;
        }
        let reader = broker.reader(&spec.stream, block).await?;
        let from = if spec.pending_first {
            ReadFrom::Pending(StreamId::MIN)
        } else {
            ReadFrom::New
        };
        Ok(Subscription {
            broker,
            spec,
            reader,
            from,
        })
    }

    /// The next page of this consumer's own pending entries, with their
    /// delivery counts; switches to new entries once the PEL is exhausted.
    async fn read_pending(&mut self, after: StreamId) -> Result<Vec<Entry>> {
        let spec = &self.spec;
        let raw = self
            .reader
            .read_group(
                &spec.group,
                &spec.consumer,
                spec.batch_size,
                ReadFrom::Pending(after),
            )
            .await?;
        let Some((last, _)) = raw.last() else {
            self.from = ReadFrom::New;
            return Ok(Vec::new());
        };
        self.from = ReadFrom::Pending(StreamId::parse("id", last)?);
        // Pending entries whose payload was trimmed cannot be delivered;
        // Reap reports them and drops them from the PEL.
        let mut batch: Vec<Entry> = raw
            .into_iter()
            .filter_map(|(id, p)| p.map(|p| Entry::from_pairs(id, p)))
            .collect();
        self.broker
            .fill_delivery_counts(&spec.stream, &spec.group, &mut batch)
            .await?;
        Ok(batch)
    }

    /// New entries, blocking up to the block time.
    async fn read_new(&mut self) -> Result<Vec<Entry>> {
        let spec = &self.spec;
        let raw = self
            .reader
            .read_group(&spec.group, &spec.consumer, spec.batch_size, ReadFrom::New)
            .await?;
        Ok(raw
            .into_iter()
            // `>` never returns deleted entries; be lenient anyway.
            .filter_map(|(id, payload)| payload.map(|p| Entry::from_pairs(id, p)))
            .map(|entry| Entry {
                delivery_count: 1,
                ..entry
            })
            .collect())
    }
}

impl ReadLoop for Subscription {
    type Item = Vec<Entry>;

    async fn turn(&mut self) -> Result<Turn<Vec<Entry>>> {
        let batch = match self.from {
            ReadFrom::Pending(after) => self.read_pending(after).await?,
            ReadFrom::New => self.read_new().await?,
        };
        Ok(if batch.is_empty() {
            Turn::Nothing
        } else {
            Turn::Item(batch)
        })
    }
}
