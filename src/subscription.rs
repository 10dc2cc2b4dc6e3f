//! The Subscribe reader: a remote client as a consumer-group member.
//!
//! A subscription reads with non-blocking XREADGROUP on the shared
//! connection; the [`crate::driver`] does everything else (room in the
//! client's buffer, waiting for the stream's doorbell bell or the group's
//! acks, heartbeats, outage riding, shutdown). So an idle subscription holds
//! no Redis connection and no blocked command, and nothing is left blocked
//! in Redis to take entries for a client that is gone.
//!
//! Nothing is acknowledged here. An entry read but not delivered (client
//! gone between read and send) stays in the group's pending entries list,
//! where `pending_first`, a reclaiming subscription or Reap recovers it.
//!
//! Each read, in order: re-create a lost group (with `create_group`); while
//! `pending_first` lasts, re-deliver the consumer's own PEL (already counted
//! in flight, so never held back); otherwise respect `max_in_flight` (the
//! consumer's PEL count in Redis, re-checked when an Ack arrives through
//! this gateway or after one `--block-ms`), run a reclaim round when one is
//! due, else read new entries. Reclaim rounds keep their own timer: every
//! `reclaim.interval_ms`, and earlier when a Nack comes due (known from the
//! Nack itself when it passed through this gateway, else from the previous
//! round, which reports the group's earliest scheduled Nack).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::{Broker, ReclaimSpec, now_ms};
use crate::delivery::{Delivery, LoopSettings};
use crate::doorbell::Doorbell;
use crate::driver::{self, Found, Live, LiveRead, Then, Wakers};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, StreamId};
use crate::model::Push;
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

/// What happens in a group through this gateway that its subscriptions
/// here should hear about at once: acks (room under `max_in_flight`) and
/// Nacks (a reclaim round may come due earlier than planned).
#[derive(Default)]
pub struct GroupSignals {
    /// Stream, then group: nested so that every Ack can look its group up
    /// by reference, without building a key.
    groups: Mutex<HashMap<String, HashMap<String, Weak<Signals>>>>,
}

/// The signals of one group; alive while a subscription holds them.
struct Signals {
    /// Bumped by every Ack.
    acked: watch::Sender<u64>,
    /// Due time (Unix ms) of the earliest Nack still to come due.
    nacked: watch::Sender<i64>,
}

impl GroupSignals {
    /// The signals of a group, shared by its subscriptions on this gateway.
    fn watch(&self, stream: &str, group: &str) -> Arc<Signals> {
        let mut streams = self.lock();
        for groups in streams.values_mut() {
            groups.retain(|_, w| w.strong_count() > 0);
        }
        streams.retain(|_, groups| !groups.is_empty());
        let groups = streams.entry(stream.to_owned()).or_default();
        if let Some(signals) = groups.get(group).and_then(Weak::upgrade) {
            return signals;
        }
        let signals = Arc::new(Signals {
            acked: watch::channel(0).0,
            nacked: watch::channel(0).0,
        });
        groups.insert(group.to_owned(), Arc::downgrade(&signals));
        signals
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Weak<Signals>>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, stream: &str, group: &str) -> Option<Arc<Signals>> {
        self.lock()
            .get(stream)
            .and_then(|groups| groups.get(group))
            .and_then(Weak::upgrade)
    }

    /// Tells the group's subscriptions that entries were acknowledged.
    pub fn acked(&self, stream: &str, group: &str) {
        if let Some(signals) = self.get(stream, group) {
            signals.acked.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Tells the group's subscriptions that Nacked entries come due at
    /// `due_ms` (Unix ms).
    pub fn nacked(&self, stream: &str, group: &str, due_ms: i64) {
        if let Some(signals) = self.get(stream, group) {
            let now = now_ms();
            signals.nacked.send_if_modified(|earliest| {
                // Keep the earliest due time still ahead; one in the past
                // has been seen by a round already or is taken by the next.
                let replace = *earliest <= now || due_ms < *earliest;
                if replace {
                    *earliest = due_ms;
                }
                replace
            });
        }
    }
}

/// Joins the group (creating it if asked to) and starts the subscription's
/// driver; its pushes and final error arrive on the returned stream. Setup
/// happens before this returns, so an entry produced after the client got
/// its response headers is never "before" a group created here.
pub async fn start(
    broker: Broker,
    spec: SubscribeSpec,
    loops: LoopSettings,
    signals: &GroupSignals,
    doorbell: &Doorbell,
    shutdown: Shutdown,
) -> Result<Delivery<Push>> {
    let group = signals.watch(&spec.stream, &spec.group);
    let bell = doorbell.watch(&spec.stream).await?;
    if spec.create_group {
        broker
            .create_group(&spec.stream, &spec.group, spec.group_start, true)
            .await?;
    }
    let wakers = Wakers {
        entries: bell,
        room: (spec.max_in_flight > 0).then(|| group.acked.subscribe()),
        replan: spec.reclaim.map(|_| group.nacked.subscribe()),
    };
    let live = Live {
        room: spec.batch_size,
        heartbeat: spec.heartbeat,
        wakers,
        reader: Subscription {
            from: if spec.pending_first {
                From::Pending(StreamId::MIN)
            } else {
                From::New
            },
            reclaim: spec.reclaim.map(|options| Reclaim {
                options,
                next: Instant::now(),
                after: None,
                nacks: group.nacked.subscribe(),
                nacks_handled_until: now_ms(),
            }),
            broker,
            spec,
            waiting_for_room: false,
            recreated: 0,
            group_lost: false,
            _group: group,
        },
    };
    Ok(driver::start(live, loops, shutdown))
}

/// Which entries the next read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    /// This consumer's own pending entries after this ID (`pending_first`).
    Pending(StreamId),
    /// Entries never delivered to the group.
    New,
}

/// The reclaim timer of a subscription.
struct Reclaim {
    options: ReclaimOptions,
    /// When the next round is due.
    next: Instant,
    /// Where an unfinished idle scan continues.
    after: Option<StreamId>,
    /// Nacks through this gateway: the earliest due time.
    nacks: watch::Receiver<i64>,
    /// Nacks due at or before this time (Unix ms) were visible to a round.
    nacks_handled_until: i64,
}

impl Reclaim {
    /// When the next round is due, seen at `now`: its planned time, or
    /// earlier for a Nack announced since the last round (its wall-clock
    /// due time taken relative to `now`, so a due Nack is due *at* `now`).
    fn due(&self, now: Instant) -> Instant {
        let nack = *self.nacks.borrow();
        if nack > self.nacks_handled_until {
            let wait = u64::try_from(nack - now_ms()).unwrap_or(0);
            self.next.min(now + Duration::from_millis(wait))
        } else {
            self.next
        }
    }
}

/// One consumer's reader.
struct Subscription {
    broker: Broker,
    spec: SubscribeSpec,
    from: From,
    reclaim: Option<Reclaim>,
    /// The last read found no room under `max_in_flight`: no timed work
    /// until room frees up.
    waiting_for_room: bool,
    /// Group losses since the last delivery, and whether the group must be
    /// re-created (see [`Subscription::read`]).
    recreated: u32,
    group_lost: bool,
    /// Keeps the group's signals alive while the subscription runs.
    _group: Arc<Signals>,
}

impl LiveRead for Subscription {
    fn describe(&self) -> String {
        let spec = &self.spec;
        format!(
            "subscription {}/{}/{}",
            spec.stream, spec.group, spec.consumer
        )
    }

    /// The group may vanish under the subscription (Redis restarted without
    /// persistence, FLUSHALL, DeleteGroup). A subscription opened with
    /// `create_group` re-creates it (and the stream) at its
    /// `group_start_id` at the start of its next read, i.e. only once the
    /// driver has made sure its client is still there (a cancelled
    /// subscription must not resurrect a group an admin just deleted).
    /// Three losses without a delivery in between end it with NOT_FOUND
    /// rather than spinning.
    async fn read(&mut self, room: u32) -> Result<Found> {
        match self.try_read(room).await {
            Ok(found) => {
                if !found.entries.is_empty() {
                    self.recreated = 0;
                }
                Ok(found)
            }
            Err(err @ Error::GroupNotFound { .. }) => {
                if !self.spec.create_group || self.recreated >= 3 {
                    return Err(err);
                }
                self.recreated += 1;
                self.group_lost = true;
                Ok(Found::nothing(Then::ReadAgain))
            }
            Err(err) => Err(err),
        }
    }

    fn due(&self) -> Option<Instant> {
        if self.waiting_for_room {
            return None;
        }
        let now = Instant::now();
        self.reclaim.as_ref().map(|reclaim| reclaim.due(now))
    }
}

impl Subscription {
    async fn try_read(&mut self, room: u32) -> Result<Found> {
        let spec = &self.spec;
        if self.group_lost {
            tracing::warn!(stream = %spec.stream, group = %spec.group, "consumer group vanished; re-creating it");
            self.broker
                .create_group(&spec.stream, &spec.group, spec.group_start, true)
                .await?;
            self.group_lost = false;
        }
        if let From::Pending(after) = self.from {
            // The consumer's own PEL already counts against
            // `max_in_flight`: re-delivering it never raises the count, so
            // a consumer that crashed at its limit still gets it back.
            let page = self
                .broker
                .read_pending(&spec.stream, &spec.group, &spec.consumer, after, room)
                .await?;
            self.from = page.last.map_or(From::New, From::Pending);
            return Ok(Found::new(page.entries, Then::ReadAgain));
        }
        let room = self.room_under_cap(room).await?;
        self.waiting_for_room = room == 0;
        if room == 0 {
            return Ok(Found::nothing(Then::AwaitRoom));
        }
        let reclaimed = self.reclaim_if_due(room).await?;
        if !reclaimed.is_empty() {
            return Ok(Found::new(reclaimed, Then::ReadAgain));
        }
        let spec = &self.spec;
        let entries = self
            .broker
            .read_new(&spec.stream, &spec.group, &spec.consumer, room)
            .await?;
        Ok(Found::new(entries, Then::AwaitEntries))
    }

    /// `room`, less what `max_in_flight` forbids. 0 means wait for acks.
    async fn room_under_cap(&self, room: u32) -> Result<u32> {
        let spec = &self.spec;
        if spec.max_in_flight == 0 {
            return Ok(room);
        }
        let in_flight = self
            .broker
            .consumer_pending(&spec.stream, &spec.group, &spec.consumer)
            .await?;
        let free = u64::from(spec.max_in_flight).saturating_sub(in_flight);
        Ok(room.min(u32::try_from(free).unwrap_or(u32::MAX)))
    }

    /// A reclaim round, when one is due.
    async fn reclaim_if_due(&mut self, room: u32) -> Result<Vec<crate::model::Entry>> {
        let Some(reclaim) = self.reclaim.as_mut() else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        if now < reclaim.due(now) {
            return Ok(Vec::new());
        }
        let spec = &self.spec;
        let started_ms = now_ms();
        let round = self
            .broker
            .reclaim(
                &spec.stream,
                &ReclaimSpec {
                    group: &spec.group,
                    consumer: &spec.consumer,
                    min_idle_ms: reclaim.options.min_idle_ms,
                    after: reclaim.after,
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
        reclaim.nacks_handled_until = started_ms;
        reclaim.after = round.after;
        // A scan that stopped mid-PEL continues at the next read; a
        // complete one waits for the interval, or for the next Nack due.
        let now = Instant::now();
        reclaim.next = if round.after.is_some() {
            now
        } else {
            let mut next = now + reclaim.options.interval;
            if let Some(due) = round.next_nack_due_ms {
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                next = next.min(now + Duration::from_millis(wait));
            }
            next
        };
        Ok(round.entries)
    }
}
