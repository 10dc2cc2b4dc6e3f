//! The reader of one partition in ordered consumption.
//!
//! It reads only while its subscription owns the partition
//! ([`Ownership`]), and each read is one ordered read in Redis
//! ([`Broker::read_ordered`]), which checks the lease and decides what
//! comes next. What the reader keeps is where its scan is: after an
//! acquisition the partition's whole pending entries list (whoever held
//! them), oldest first, then new entries; a Nack or an entry held too long
//! sends the scan back (decided in Redis). Its timers: a Nack's due time
//! (announced through this gateway, or learnt from a read that found the
//! partition held back) and the idle check of `reclaim`.

use std::sync::Arc;

use tokio::time::Instant;

use super::{NO_NACK, NackInbox, ReclaimOptions, SubscribeSpec, earlier};
use crate::broker::{Broker, Holder, Ordered, OrderedRead, Scan};
use crate::driver::{Found, Then};
use crate::error::Result;
use crate::ownership::Ownership;

/// One partition's ordered reader state.
pub(super) struct OrderedPart {
    partition: u32,
    holder: Holder,
    ownership: Arc<Ownership>,
    /// The acquisition the scan belongs to (0: none yet).
    epoch: u64,
    scan: Scan,
    /// A Nacked entry holds the partition back until then (Unix ms).
    held_until: Option<i64>,
    /// The idle check: its options and when it is next due.
    idle: Option<(ReclaimOptions, Instant)>,
    /// Nacks announced through this gateway.
    pub(super) nacks: Arc<NackInbox>,
}

impl OrderedPart {
    pub(super) fn new(
        partition: u32,
        holder: Holder,
        ownership: Arc<Ownership>,
        idle: Option<ReclaimOptions>,
        nacks: Arc<NackInbox>,
    ) -> OrderedPart {
        OrderedPart {
            partition,
            holder,
            ownership,
            epoch: 0,
            scan: Scan::Pending(None),
            held_until: None,
            idle: idle.map(|options| (options, Instant::now() + options.interval)),
            nacks,
        }
    }

    /// One read into `room`, if the partition is owned.
    pub(super) async fn read(
        &mut self,
        broker: &Broker,
        spec: &SubscribeSpec,
        room: u32,
    ) -> Result<Found> {
        let Some(epoch) = self.ownership.owned(self.partition) else {
            return Ok(Found::nothing(Then::AwaitEntries));
        };
        if epoch != self.epoch {
            self.epoch = epoch;
            self.scan = Scan::Pending(None);
        }
        // The read below reads the Nack schedule: what was announced is
        // no news any more (emptied silently, as a reclaim round does).
        self.nacks.send_if_modified(|earliest| {
            *earliest = NO_NACK;
            false
        });
        self.held_until = None;
        let now = Instant::now();
        let min_idle_ms = match &mut self.idle {
            Some((options, next)) if *next <= now => {
                *next = now + options.interval;
                options.min_idle_ms
            }
            _ => 0,
        };
        let read = OrderedRead {
            group: &spec.group,
            holder: &self.holder,
            scan: self.scan,
            count: room,
            max_deliveries: spec.max_deliveries,
            dead_letter_stream: &spec.dead_letter_stream,
            min_idle_ms,
            max_in_flight: spec.max_in_flight,
        };
        // An in-band Nack of this partition never overlaps a read of it
        // (see `crate::rewinds`); the entries carry the epoch read in.
        let held = match &spec.rewinds {
            Some(rewinds) => Some(rewinds.hold(self.partition).await),
            None => None,
        };
        let outcome = broker.read_ordered(&spec.stream, &read).await?;
        let read_in = held.as_deref().copied().unwrap_or(0);
        drop(held);
        Ok(match outcome {
            Ordered::Lost => {
                self.ownership.lost(self.partition, epoch);
                Found::nothing(Then::AwaitEntries)
            }
            Ordered::Hold(due_ms) => {
                self.held_until = Some(due_ms);
                Found::nothing(Then::AwaitEntries)
            }
            Ordered::Full => Found::nothing(Then::AwaitRoom),
            Ordered::Read { mut entries, next } => {
                for entry in &mut entries {
                    entry.epoch = read_in;
                }
                let scanning = matches!(self.scan, Scan::Pending(_));
                self.scan = next;
                let then = if scanning {
                    Then::ReadAgain
                } else {
                    Then::AwaitEntries
                };
                Found::new(entries, then)
            }
        })
    }

    /// The next timed read: a Nack coming due, the idle check.
    pub(super) fn due(&self) -> Option<Instant> {
        self.ownership.owned(self.partition)?;
        let now = Instant::now();
        let far = now + std::time::Duration::from_secs(86_400);
        let mut due = self.idle.map(|(_, next)| next);
        for ms in [self.held_until, Some(*self.nacks.borrow())]
            .into_iter()
            .flatten()
            .filter(|&ms| ms != NO_NACK)
        {
            let at = earlier(far, ms, now);
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        due
    }
}
