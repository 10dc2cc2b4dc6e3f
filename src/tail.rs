//! The Tail loop: follows a stream with plain XREAD, outside any group.
//!
//! Same rules as Subscribe: a connection of its own, a bounded block, a
//! read only after buffer space is reserved. `$` is resolved once, at the
//! start, to the newest existing entry: re-sending `$` on every read would
//! lose entries appended between two reads.

use std::time::{Duration, Instant};

use crate::broker::{Broker, Reader};
use crate::delivery::{self, Delivery, ReadLoop, Turn};
use crate::error::Result;
use crate::ids::{GroupStart, StreamId};
use crate::model::{Entry, Push};
use crate::shutdown::Shutdown;

/// A validated Tail request.
#[derive(Clone, Debug)]
pub struct TailSpec {
    /// Client stream name.
    pub stream: String,
    /// Where to start: `$` or after an ID.
    pub start: GroupStart,
    /// XREAD COUNT.
    pub batch_size: u32,
    /// Heartbeat interval; `None` = off.
    pub heartbeat: Option<Duration>,
}

/// Fixes the start position and starts the read loop; batches arrive on the
/// returned stream. `$` means entries appended after this returns.
pub async fn start(
    broker: Broker,
    spec: TailSpec,
    block: Duration,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    let reads = Tail::open(broker, spec, block).await?;
    Ok(delivery::start(reads, shutdown))
}

/// The read position of one tail.
struct Tail {
    reader: Reader,
    after: StreamId,
    batch_size: u32,
    heartbeat: Option<Duration>,
    last_push: Instant,
}

impl Tail {
    async fn open(broker: Broker, spec: TailSpec, block: Duration) -> Result<Tail> {
        let after = match spec.start {
            GroupStart::End => broker.last_entry_id(&spec.stream).await?,
            GroupStart::After(id) => id,
        };
        Ok(Tail {
            reader: broker.reader(&spec.stream, block).await?,
            after,
            batch_size: spec.batch_size,
            heartbeat: spec.heartbeat,
            last_push: Instant::now(),
        })
    }
}

impl ReadLoop for Tail {
    type Item = Push;

    async fn turn(&mut self) -> Result<Turn<Push>> {
        let raw = self.reader.read_after(self.after, self.batch_size).await?;
        let Some((last, _)) = raw.last() else {
            return Ok(match self.heartbeat {
                Some(every) if self.last_push.elapsed() >= every => {
                    self.last_push = Instant::now();
                    Turn::Item(Push::Heartbeat)
                }
                _ => Turn::Nothing,
            });
        };
        self.after = StreamId::parse("id", last)?;
        self.last_push = Instant::now();
        Ok(Turn::Item(Push::Entries(
            raw.into_iter()
                .filter_map(|(id, p)| p.map(|p| Entry::from_pairs(id, p)))
                .collect(),
        )))
    }
}
