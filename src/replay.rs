//! The Replay loop: pages through a range of history without touching any
//! consumer group.
//!
//! Each page continues strictly after the last entry of the previous one
//! (the ID's successor going forwards, its predecessor going backwards), so
//! no entry is skipped or repeated however the stream changes meanwhile.
//! Like Subscribe, a page is read only after buffer space for it is reserved.

use crate::broker::Broker;
use crate::delivery::{self, Delivery, Feed};
use crate::error::{Error, Result};
use crate::ids::{IdRange, StreamId};
use crate::model::Entry;
use crate::shutdown::Shutdown;

/// A validated Replay request.
#[derive(Clone, Debug)]
pub struct ReplaySpec {
    /// Client stream name.
    pub stream: String,
    /// Inclusive bounds.
    pub range: IdRange,
    /// Newest first.
    pub reverse: bool,
    /// Entries in total; `None` = all.
    pub limit: Option<u64>,
    /// Entries per page.
    pub page_size: u32,
}

/// Starts a replay task; pages arrive on the returned stream.
pub fn spawn(broker: Broker, spec: ReplaySpec, shutdown: Shutdown) -> Delivery<Vec<Entry>> {
    let (feed, delivery) = delivery::channel(1);
    tokio::spawn(async move {
        let outcome = run(&broker, spec, &shutdown, &feed).await;
        feed.finish(outcome);
    });
    delivery
}

async fn run(
    broker: &Broker,
    spec: ReplaySpec,
    shutdown: &Shutdown,
    feed: &Feed<Vec<Entry>>,
) -> Result<()> {
    let mut range = spec.range;
    let mut remaining = spec.limit.unwrap_or(u64::MAX);
    while remaining > 0 && !range.is_empty() {
        let permit = tokio::select! {
            biased;
            () = shutdown.triggered() => return Err(Error::ShuttingDown),
            permit = feed.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(()),
            },
        };
        let count = remaining.min(u64::from(spec.page_size));
        let page = broker
            .range(&spec.stream, range, spec.reverse, count)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        let last = StreamId::parse("id", &last.id)?;
        let next = if spec.reverse {
            last.predecessor().map(|high| IdRange { high, ..range })
        } else {
            last.successor().map(|low| IdRange { low, ..range })
        };
        let full = page.len() as u64 == count;
        remaining -= page.len() as u64;
        permit.send(page);
        match next {
            Some(next) if full => range = next,
            _ => return Ok(()),
        }
    }
    Ok(())
}
