//! The Tail loop: follows a stream with plain XREAD, outside any group.
//!
//! Same rules as Subscribe: a connection of its own, a bounded block, a
//! read only after buffer space is reserved. `$` is resolved once, at the
//! start, to the newest existing entry: re-sending `$` on every read would
//! lose entries appended between two reads.

use std::time::Duration;

use crate::broker::{Broker, Reader};
use crate::delivery::{self, Delivery, LoopSettings, Pulse, ReadLoop, Turn};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, StreamId};
use crate::model::{Entry, Push};
use crate::outage::Outage;
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
    loops: LoopSettings,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    let reads = Tail::open(broker, spec, loops).await?;
    Ok(delivery::start(reads, loops.stall_timeout, shutdown))
}

/// The read position of one tail.
struct Tail {
    broker: Broker,
    stream: String,
    reader: Reader,
    after: StreamId,
    batch_size: u32,
    loops: LoopSettings,
    pulse: Pulse,
    outage: Option<Outage>,
}

impl Tail {
    async fn open(broker: Broker, spec: TailSpec, loops: LoopSettings) -> Result<Tail> {
        let after = match spec.start {
            GroupStart::End => broker.last_entry_id(&spec.stream).await?,
            GroupStart::After(id) => id,
        };
        Ok(Tail {
            reader: broker.reader(&spec.stream, loops.block).await?,
            broker,
            stream: spec.stream,
            after,
            batch_size: spec.batch_size,
            loops,
            pulse: Pulse::new(spec.heartbeat),
            outage: None,
        })
    }

    async fn try_turn(&mut self) -> Result<Turn<Push>> {
        let raw = self.reader.read_after(self.after, self.batch_size).await?;
        let Some((last, _)) = raw.last() else {
            return Ok(self.pulse.idle());
        };
        self.after = StreamId::parse("id", last)?;
        self.pulse.pushed();
        Ok(Turn::Item(Push::Entries(
            raw.into_iter()
                .filter_map(|(id, p)| p.map(|p| Entry::from_pairs(id, p)))
                .collect(),
        )))
    }
}

impl ReadLoop for Tail {
    type Item = Push;

    /// Like a subscription, a tail rides out a Redis outage for
    /// `--redis-outage-grace-ms`, then resumes after the last entry it sent.
    async fn turn(&mut self) -> Result<Turn<Push>> {
        let what = format!("tail {}", self.stream);
        match self.try_turn().await {
            Ok(turn) => {
                if let Some(outage) = self.outage.take() {
                    outage.end(&what);
                }
                Ok(turn)
            }
            Err(err @ (Error::Unavailable(_) | Error::Timeout(_))) => {
                let outage = self
                    .outage
                    .get_or_insert_with(|| Outage::begin(&what, &err));
                if !outage.wait(self.loops.outage_grace).await {
                    return Err(err);
                }
                if let Ok(reader) = self.broker.reader(&self.stream, self.loops.block).await {
                    self.reader = reader;
                }
                Ok(self.pulse.idle())
            }
            Err(err) => Err(err),
        }
    }
}
