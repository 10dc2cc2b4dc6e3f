//! The Subscribe read loop: a remote client as a consumer-group member.
//!
//! Each subscription is a task that reads with non-blocking XREADGROUP on
//! the shared connection and, when there is nothing new, waits for its
//! stream's bell from the [`crate::doorbell`] (at most one block period).
//! So an idle subscription holds no Redis connection and no blocked command.
//! Every turn of the loop first reserves room in the client's buffer, then
//! reads; so the gateway never holds more than one batch the client has not
//! taken, and a client that went away is noticed before the next read, at
//! most one block period later. Nothing is left blocked in Redis to take
//! entries for a client that is gone.
//!
//! Nothing is acknowledged here. An entry read but not delivered (client
//! gone between read and send) stays in the group's pending entries list,
//! where `pending_first`, a reclaiming subscription or Reap recovers it.
//!
//! Each turn, in order: re-create a lost group (with `create_group`); while
//! `pending_first` lasts, re-deliver the consumer's own PEL (already counted
//! in flight, so never held back); otherwise respect `max_in_flight` (the
//! consumer's PEL count in Redis, re-checked when an Ack arrives through
//! this gateway or after one block period), run a reclaim round when one is
//! due, else read new entries; and send a heartbeat when nothing was sent
//! for the heartbeat interval. A lost Redis connection is ridden out (see
//! [`crate::outage`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::broker::{Broker, ReadFrom, ReclaimSpec};
use crate::delivery::{self, Delivery, LoopSettings, Pulse, ReadLoop, Turn};
use crate::doorbell::{Bell, Doorbell};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, StreamId};
use crate::model::{Entry, Push};
use crate::outage::Outage;
use crate::shutdown::Shutdown;

/// Automatic recovery settings.
#[derive(Clone, Copy, Debug)]
pub struct ReclaimOptions {
    /// Claim entries idle at least this long.
    pub min_idle_ms: u64,
    /// How often.
    pub interval: Duration,
}

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
    /// Automatic recovery, if any.
    pub reclaim: Option<ReclaimOptions>,
    /// Dead-letter after this many deliveries (0 = never).
    pub max_deliveries: u32,
    /// Client name of the dead-letter stream.
    pub dead_letter_stream: String,
    /// Cap on the consumer's pending entries (0 = none).
    pub max_in_flight: u32,
    /// Heartbeat interval; `None` = off.
    pub heartbeat: Option<Duration>,
}

/// Wakes subscriptions of a group when an Ack passes through this gateway,
/// so that a subscription paused by `max_in_flight` resumes at once instead
/// of at its next periodic re-check.
#[derive(Default)]
pub struct AckSignals {
    /// Stream, then group: nested so that every Ack can look its group up
    /// by reference, without building a key.
    groups: Mutex<HashMap<String, HashMap<String, Weak<Notify>>>>,
}

impl AckSignals {
    /// The signal of a group, shared by its subscriptions on this gateway.
    fn watch(&self, stream: &str, group: &str) -> Arc<Notify> {
        let mut streams = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for groups in streams.values_mut() {
            groups.retain(|_, w| w.strong_count() > 0);
        }
        streams.retain(|_, groups| !groups.is_empty());
        let groups = streams.entry(stream.to_owned()).or_default();
        if let Some(notify) = groups.get(group).and_then(Weak::upgrade) {
            return notify;
        }
        let notify = Arc::new(Notify::new());
        groups.insert(group.to_owned(), Arc::downgrade(&notify));
        notify
    }

    /// Tells the group's subscriptions that entries were acknowledged.
    pub fn acked(&self, stream: &str, group: &str) {
        let streams = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = streams
            .get(stream)
            .and_then(|groups| groups.get(group))
            .and_then(Weak::upgrade)
        {
            notify.notify_waiters();
        }
    }
}

/// Joins the group (creating it if asked to) and starts the read loop; its
/// pushes and final error arrive on the returned stream. Setup happens
/// before this returns, so an entry produced after the client got its
/// response headers is never "before" a group created here. `loops` sets
/// the longest idle wait, the outage grace and the stall timeout.
pub async fn start(
    broker: Broker,
    spec: SubscribeSpec,
    loops: LoopSettings,
    acks: &AckSignals,
    doorbell: &Doorbell,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    let acked = acks.watch(&spec.stream, &spec.group);
    let bell = doorbell.watch(&spec.stream).await?;
    let reads = Subscription::open(broker, spec, loops, acked, bell).await?;
    Ok(delivery::start(reads, loops.stall_timeout, shutdown))
}

/// One consumer's read loop.
struct Subscription {
    broker: Broker,
    spec: SubscribeSpec,
    /// Rings when the stream gets new entries.
    bell: Bell,
    from: ReadFrom,
    loops: LoopSettings,
    acked: Arc<Notify>,
    /// A Redis outage being ridden out, if any.
    outage: Option<Outage>,
    /// Group losses since the last delivery, and whether the group must be
    /// re-created (see [`Subscription::recreate_group`]).
    recreated: u32,
    group_lost: bool,
    /// When the next reclaim round is due, and where its scan continues.
    next_reclaim: Instant,
    reclaim_cursor: String,
    /// Heartbeats.
    pulse: Pulse,
}

impl Subscription {
    /// Creates the group if asked to and sets the loop up.
    async fn open(
        broker: Broker,
        spec: SubscribeSpec,
        loops: LoopSettings,
        acked: Arc<Notify>,
        bell: Bell,
    ) -> Result<Subscription> {
        if spec.create_group {
            broker
                .create_group(&spec.stream, &spec.group, spec.group_start, true)
                .await?;
        }
        let from = if spec.pending_first {
            ReadFrom::Pending(StreamId::MIN)
        } else {
            ReadFrom::New
        };
        let now = Instant::now();
        let spec_heartbeat = spec.heartbeat;
        Ok(Subscription {
            broker,
            spec,
            bell,
            from,
            loops,
            acked,
            outage: None,
            recreated: 0,
            group_lost: false,
            next_reclaim: now,
            reclaim_cursor: "-".to_owned(),
            pulse: Pulse::new(spec_heartbeat),
        })
    }

    /// How many entries this turn may take: the batch size, less what
    /// `max_in_flight` forbids. 0 means wait.
    async fn room(&self) -> Result<u32> {
        let spec = &self.spec;
        if spec.max_in_flight == 0 {
            return Ok(spec.batch_size);
        }
        let in_flight = self
            .broker
            .consumer_pending(&spec.stream, &spec.group, &spec.consumer)
            .await?;
        let free = u64::from(spec.max_in_flight).saturating_sub(in_flight);
        Ok(spec.batch_size.min(u32::try_from(free).unwrap_or(u32::MAX)))
    }

    /// A reclaim round, when one is due.
    async fn reclaim(&mut self, room: u32) -> Result<Vec<Entry>> {
        let Some(options) = self.spec.reclaim else {
            return Ok(Vec::new());
        };
        if Instant::now() < self.next_reclaim {
            return Ok(Vec::new());
        }
        let spec = &self.spec;
        let round = self
            .broker
            .reclaim(
                &spec.stream,
                &ReclaimSpec {
                    group: &spec.group,
                    consumer: &spec.consumer,
                    min_idle_ms: options.min_idle_ms,
                    cursor: &self.reclaim_cursor,
                    count: room,
                    max_deliveries: spec.max_deliveries,
                    dead_letter_stream: &spec.dead_letter_stream,
                },
            )
            .await?;
        if !round.dead_lettered.is_empty() || !round.deleted_ids.is_empty() {
            tracing::info!(
                stream = %spec.stream, group = %spec.group,
                dead_lettered = round.dead_lettered.len(), trimmed = round.deleted_ids.len(),
                dead_letter_stream = %spec.dead_letter_stream, "moved entries to the dead-letter stream"
            );
        }
        // A scan that stopped mid-PEL continues at the next turn; a complete
        // one waits for the interval.
        let complete = round.cursor == "-";
        self.reclaim_cursor = round.cursor;
        self.next_reclaim = if complete {
            Instant::now() + options.interval
        } else {
            Instant::now()
        };
        Ok(round.entries)
    }

    /// The next page of this consumer's own pending entries, with their
    /// delivery counts; switches to new entries once the PEL is exhausted.
    async fn read_pending(&mut self, after: StreamId, room: u32) -> Result<Vec<Entry>> {
        let spec = &self.spec;
        let raw = self
            .broker
            .read_group(
                &spec.stream,
                &spec.group,
                &spec.consumer,
                room,
                ReadFrom::Pending(after),
            )
            .await?;
        let Some((last, _)) = raw.last() else {
            self.from = ReadFrom::New;
            return Ok(Vec::new());
        };
        self.from = ReadFrom::Pending(StreamId::parse("id", last)?);
        // Pending entries whose payload was trimmed cannot be delivered;
        // Reap and reclaim report them and drop them from the PEL.
        let mut batch: Vec<Entry> = raw
            .into_iter()
            .filter_map(|(id, p)| p.map(|p| Entry::from_pairs(id, p)))
            .map(|entry| Entry {
                redelivered: true,
                ..entry
            })
            .collect();
        self.broker
            .fill_delivery_counts(&spec.stream, &spec.group, &mut batch)
            .await?;
        Ok(batch)
    }

    /// New entries. When there are none, waits (up to the block time) for
    /// the doorbell to ring: the bell's version is taken before the read, so
    /// an entry appended after the read but before the wait is not missed.
    async fn read_new(&mut self, room: u32) -> Result<Vec<Entry>> {
        let spec = &self.spec;
        self.bell.borrow_and_update();
        let raw = self
            .broker
            .read_group(
                &spec.stream,
                &spec.group,
                &spec.consumer,
                room,
                ReadFrom::New,
            )
            .await?;
        if raw.is_empty() {
            let _ = tokio::time::timeout(self.loops.block, self.bell.changed()).await;
        }
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

    /// Waits until an Ack may have made room (or a block period passed,
    /// for acks through other gateways).
    async fn wait_for_acks(&self) {
        let _ = tokio::time::timeout(self.loops.block, self.acked.notified()).await;
    }
}

impl Subscription {
    /// A name for log lines.
    fn describe(&self) -> String {
        let spec = &self.spec;
        format!(
            "subscription {}/{}/{}",
            spec.stream, spec.group, spec.consumer
        )
    }

    /// Rides out a lost connection: waits (with backoff) and lets the next
    /// turn try again; gives up with `err` once the outage lasted
    /// `--redis-outage-grace-ms`.
    async fn ride_out(&mut self, err: Error) -> Result<Turn<Push>> {
        let what = self.describe();
        let outage = self
            .outage
            .get_or_insert_with(|| Outage::begin(&what, &err));
        if !outage.wait(self.loops.outage_grace).await {
            return Err(err);
        }
        Ok(self.pulse.idle())
    }

    /// The group vanished under the subscription (Redis restarted without
    /// persistence, FLUSHALL, DeleteGroup). A subscription opened with
    /// `create_group` re-creates it (and the stream) at its
    /// `group_start_id` at the start of its next turn, i.e. only once the
    /// loop has made sure its client is still there (a cancelled
    /// subscription must not resurrect a group an admin just deleted).
    /// Three losses without a delivery in between end it with NOT_FOUND
    /// rather than spinning.
    fn recreate_group(&mut self, err: Error) -> Result<Turn<Push>> {
        if !self.spec.create_group || self.recreated >= 3 {
            return Err(err);
        }
        self.recreated += 1;
        self.group_lost = true;
        Ok(Turn::Nothing)
    }
}

impl ReadLoop for Subscription {
    type Item = Push;

    async fn turn(&mut self) -> Result<Turn<Push>> {
        match self.try_turn().await {
            Ok(turn) => {
                if let Some(outage) = self.outage.take() {
                    outage.end(&self.describe());
                }
                Ok(turn)
            }
            Err(err @ (Error::Unavailable(_) | Error::Timeout(_))) => self.ride_out(err).await,
            Err(err @ Error::GroupNotFound { .. }) => self.recreate_group(err),
            Err(err) => Err(err),
        }
    }
}

impl Subscription {
    /// One turn, without outage handling.
    async fn try_turn(&mut self) -> Result<Turn<Push>> {
        if self.group_lost {
            let spec = &self.spec;
            tracing::warn!(stream = %spec.stream, group = %spec.group, "consumer group vanished; re-creating it");
            self.broker
                .create_group(&spec.stream, &spec.group, spec.group_start, true)
                .await?;
            self.group_lost = false;
        }
        let batch = match self.from {
            // The consumer's own PEL already counts against
            // `max_in_flight`: re-delivering it never raises the count, so
            // a consumer that crashed at its limit still gets it back.
            ReadFrom::Pending(after) => self.read_pending(after, self.spec.batch_size).await?,
            ReadFrom::New => {
                let room = self.room().await?;
                if room == 0 {
                    self.wait_for_acks().await;
                    return Ok(self.pulse.idle());
                }
                let reclaimed = self.reclaim(room).await?;
                if reclaimed.is_empty() {
                    self.read_new(room).await?
                } else {
                    reclaimed
                }
            }
        };
        if batch.is_empty() {
            return Ok(self.pulse.idle());
        }
        self.recreated = 0;
        self.pulse.pushed();
        Ok(Turn::Item(Push::Entries(batch)))
    }
}
