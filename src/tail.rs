//! The Tail loop: follows a stream with plain XREAD, outside any group.
//!
//! Same rules as Subscribe: non-blocking reads on the shared connection,
//! the doorbell when idle, a read only after buffer space is reserved. `$`
//! is resolved once, at the start, to the newest existing entry: re-sending
//! `$` on every read would lose entries appended between two reads.

use std::time::Duration;

use crate::broker::Broker;
use crate::delivery::{self, Delivery, LoopSettings, Pulse, ReadLoop, Turn};
use crate::doorbell::{Bell, Doorbell};
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
    doorbell: &Doorbell,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    let bell = doorbell.watch(&spec.stream).await?;
    let reads = Tail::open(broker, spec, loops, bell).await?;
    Ok(delivery::start(reads, loops.stall_timeout, shutdown))
}

/// The read position of one tail.
struct Tail {
    broker: Broker,
    stream: String,
    bell: Bell,
    after: StreamId,
    batch_size: u32,
    loops: LoopSettings,
    pulse: Pulse,
    outage: Option<Outage>,
}

impl Tail {
    async fn open(broker: Broker, spec: TailSpec, loops: LoopSettings, bell: Bell) -> Result<Tail> {
        let after = match spec.start {
            GroupStart::End => broker.last_entry_id(&spec.stream).await?,
            GroupStart::After(id) => id,
        };
        Ok(Tail {
            broker,
            stream: spec.stream,
            bell,
            after,
            batch_size: spec.batch_size,
            loops,
            pulse: Pulse::new(spec.heartbeat),
            outage: None,
        })
    }

    async fn try_turn(&mut self) -> Result<Turn<Push>> {
        self.bell.borrow_and_update();
        let raw = self
            .broker
            .read_after(&self.stream, self.after, self.batch_size)
            .await?;
        let Some((last, _)) = raw.last() else {
            let _ = tokio::time::timeout(self.loops.block, self.bell.changed()).await;
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
        match self.try_turn().await {
            Ok(turn) => {
                if let Some(outage) = self.outage.take() {
                    outage.end(&format!("tail {}", self.stream));
                }
                Ok(turn)
            }
            Err(err @ (Error::Unavailable(_) | Error::Timeout(_))) => {
                let what = format!("tail {}", self.stream);
                let outage = self
                    .outage
                    .get_or_insert_with(|| Outage::begin(&what, &err));
                if !outage.wait(self.loops.outage_grace).await {
                    return Err(err);
                }
                Ok(self.pulse.idle())
            }
            Err(err) => Err(err),
        }
    }
}
