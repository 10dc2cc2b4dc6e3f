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

use crate::broker::{Broker, ReadFrom};
use crate::delivery::{self, Delivery, Feed};
use crate::error::{Error, Result};
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

/// Starts a subscription task; its batches and final error arrive on the
/// returned stream. `block` bounds each blocking read.
pub fn spawn(
    broker: Broker,
    spec: SubscribeSpec,
    block: Duration,
    shutdown: Shutdown,
) -> Delivery<Vec<Entry>> {
    let (feed, delivery) = delivery::channel(1);
    tokio::spawn(async move {
        let outcome = run(&broker, &spec, block, &shutdown, &feed).await;
        if let Err(err) = &outcome {
            tracing::debug!(stream = %spec.stream, group = %spec.group, consumer = %spec.consumer, error = %err, "subscription ended");
        }
        feed.finish(outcome);
    });
    delivery
}

/// Ok(()) means the client went away.
async fn run(
    broker: &Broker,
    spec: &SubscribeSpec,
    block: Duration,
    shutdown: &Shutdown,
    feed: &Feed<Vec<Entry>>,
) -> Result<()> {
    if spec.create_group {
        broker
            .create_group(&spec.stream, &spec.group, spec.group_start, true)
            .await?;
    }
    let mut reader = broker.reader(&spec.stream, block).await?;
    let mut from = if spec.pending_first {
        ReadFrom::Pending(StreamId::MIN)
    } else {
        ReadFrom::New
    };
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.triggered() => return Err(Error::ShuttingDown),
            permit = feed.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(()),
            },
        };
        let raw = reader
            .read_group(&spec.group, &spec.consumer, spec.batch_size, from)
            .await?;
        let mut batch = Vec::with_capacity(raw.len());
        match from {
            ReadFrom::New => {
                for (id, payload) in raw {
                    // `>` never returns deleted entries; be lenient anyway.
                    if let Some(pairs) = payload {
                        let mut entry = Entry::from_pairs(id, pairs);
                        entry.delivery_count = 1;
                        batch.push(entry);
                    }
                }
            }
            ReadFrom::Pending(_) => {
                let Some((last, _)) = raw.last() else {
                    // The PEL is exhausted: continue with new entries.
                    from = ReadFrom::New;
                    continue;
                };
                from = ReadFrom::Pending(StreamId::parse("id", last)?);
                // Pending entries whose payload was trimmed cannot be
                // delivered; Reap reports them and drops them from the PEL.
                batch.extend(
                    raw.into_iter()
                        .filter_map(|(id, p)| p.map(|p| Entry::from_pairs(id, p))),
                );
                broker
                    .fill_delivery_counts(&spec.stream, &spec.group, &mut batch)
                    .await?;
            }
        }
        if !batch.is_empty() {
            permit.send(batch);
        }
        if shutdown.is_triggered() {
            return Err(Error::ShuttingDown);
        }
    }
}
