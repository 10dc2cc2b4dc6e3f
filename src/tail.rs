//! The Tail loop: follows a stream with plain XREAD, outside any group.
//!
//! Same rules as Subscribe, from the same [`crate::driver`]: non-blocking
//! reads on the shared connection, the doorbell when idle, a read only after
//! buffer space is reserved. `$` is resolved once, at the start, to the
//! newest existing entry: re-sending `$` on every read would lose entries
//! appended between two reads.

use std::time::Duration;

use futures_util::future::try_join_all;

use crate::broker::{Broker, partition_stream};
use crate::delivery::{Delivery, LoopSettings};
use crate::doorbell::Doorbell;
use crate::driver::{self, Found, Live, LiveRead, Then, Wakers};
use crate::error::Result;
use crate::ids::{GroupStart, StreamId};
use crate::model::Push;
use crate::parts;
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

/// Fixes the start position and starts the tail's driver; batches arrive on
/// the returned stream. `$` means entries appended after this returns.
///
/// On a stream of `partitions` partitions (0: a plain stream) each
/// partition is followed from its own position (`$`: each one's newest
/// entry) and the driver reads them in turn ([`crate::parts`]).
pub async fn start(
    broker: Broker,
    spec: TailSpec,
    partitions: u32,
    loops: LoopSettings,
    doorbell: &Doorbell,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    if partitions == 0 {
        let live = prepare(broker, spec, doorbell).await?;
        return Ok(driver::start(live, loops, shutdown));
    }
    let lives = try_join_all((0..partitions).map(|p| {
        let spec = TailSpec {
            stream: partition_stream(&spec.stream, p),
            ..spec.clone()
        };
        prepare(broker.clone(), spec, doorbell)
    }))
    .await
    .map_err(|e| e.about(&spec.stream))?;
    let live = parts::combine(&spec.stream, lives, Vec::new(), &shutdown);
    Ok(driver::start(live, loops, shutdown))
}

/// Fixes one stream's start position: the live stream to drive.
async fn prepare(broker: Broker, spec: TailSpec, doorbell: &Doorbell) -> Result<Live<Tail>> {
    let bell = doorbell.watch(&spec.stream).await?;
    let after = match spec.start {
        GroupStart::End => broker.last_entry_id(&spec.stream).await?,
        GroupStart::After(id) => id,
    };
    let live = Live {
        room: spec.batch_size,
        heartbeat: spec.heartbeat,
        wakers: Wakers {
            entries: bell.rings,
            recheck: bell.recheck,
            room: None,
            replan: None,
        },
        reader: Tail {
            broker,
            stream: spec.stream,
            after,
        },
    };
    Ok(live)
}

/// The read position of one tail. Like a subscription, a tail rides out a
/// Redis outage and resumes after the last entry it sent.
struct Tail {
    broker: Broker,
    stream: String,
    after: StreamId,
}

impl LiveRead for Tail {
    fn describe(&self) -> String {
        format!("tail {}", self.stream)
    }

    async fn read(&mut self, room: u32) -> Result<Found> {
        let entries = self
            .broker
            .read_after(&self.stream, self.after, room)
            .await?;
        if let Some(last) = entries.last() {
            self.after = last.id;
        }
        Ok(Found::new(entries, Then::AwaitEntries))
    }
}
