//! The Replay loop: pages through a range of history without touching any
//! consumer group.
//!
//! Each page continues strictly after the last entry of the previous one
//! (the ID's successor going forwards, its predecessor going backwards), so
//! no entry is skipped or repeated however the stream changes meanwhile.
//! Like Subscribe, a page is read only after buffer space for it is reserved.
//! A partitioned stream is replayed by [`merge`], which pages each
//! partition this way and merges them.

use std::time::Duration;

use crate::broker::Broker;
use crate::delivery::{self, Delivery, ReadLoop, Turn};
use crate::error::Result;
use crate::ids::IdRange;
use crate::model::Entry;
use crate::shutdown::Shutdown;

pub(crate) mod merge;

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

/// Starts the paging loop; pages arrive on the returned stream.
pub fn start(
    broker: Broker,
    spec: ReplaySpec,
    stall: Duration,
    shutdown: Shutdown,
) -> Delivery<Vec<Entry>> {
    let pages = Pages {
        range: Some(spec.range).filter(|r| !r.is_empty()),
        remaining: spec.limit.unwrap_or(u64::MAX),
        broker,
        spec,
    };
    delivery::start(pages, stall, shutdown)
}

/// The paging state of one replay.
struct Pages {
    broker: Broker,
    spec: ReplaySpec,
    /// What is left to read; `None` when done.
    range: Option<IdRange>,
    /// Entries still allowed by `limit`.
    remaining: u64,
}

impl ReadLoop for Pages {
    type Item = Vec<Entry>;

    async fn turn(&mut self) -> Result<Turn<Vec<Entry>>> {
        let Some(current) = self.range.filter(|_| self.remaining > 0) else {
            return Ok(Turn::End);
        };
        let count = self.remaining.min(u64::from(self.spec.page_size));
        let page = self
            .broker
            .range(&self.spec.stream, current, self.spec.reverse, count)
            .await?;
        let Some(last) = page.last() else {
            return Ok(Turn::End);
        };
        let last = last.id;
        self.remaining -= page.len() as u64;
        // A short page means the range is exhausted.
        self.range = if (page.len() as u64) < count {
            None
        } else if self.spec.reverse {
            last.predecessor().map(|high| IdRange { high, ..current })
        } else {
            last.successor().map(|low| IdRange { low, ..current })
        }
        .filter(|r| !r.is_empty());
        Ok(Turn::Item(page))
    }
}
