//! The XREAD wake-up: blocking reads over the idle streams, for servers
//! that cannot track keys (and `--wakeup xread`).
//!
//! A doorbell task blocks in one
//! `XREAD BLOCK ... STREAMS k1 k2 ...` over the streams that have idle
//! readers, on a connection of its own. When a stream gets new entries it
//! rings that stream's bell (a version counter); the loops reading it wake
//! and read without blocking on the shared connection.
//!
//! A blocking read over N streams costs Redis O(N) at every wake-up, so
//! streams are spread over shards of at most [`STREAMS_PER_SHARD`], each
//! with its own task and connection: ten connections for a thousand idle
//! subscriptions on distinct streams, and a busy stream wakes only its own
//! shard's read.
//!
//! No wake-up is missed: a loop takes the bell's version *before* its
//! non-blocking read, and after an empty read waits for a version newer
//! than that one, so an entry that arrived in between has already moved
//! the version on. The doorbell watches each stream from its newest entry
//! at the time the stream was first watched. A ring goes out as soon as the
//! blocking read returns, and only then does the doorbell jump the stream's
//! position to its newest entry (so a busy stream rings once per round
//! rather than once per entry): the wake-up costs readers no extra round
//! trip (see [`Shard::ring`]).
//!
//! Shards come and go with their readers. A stream whose readers all left
//! is forgotten at the shard's next round; a shard left with no stream
//! lingers for [`SHARD_LINGER`] (keeping its connection, so a subscriber
//! that reconnects at once costs nothing new) and then retires: its task
//! ends, its connection closes and the doorbell forgets it. So a gateway
//! that once watched 100,000 streams holds nothing for them once their
//! readers are gone. A reader arriving while its shard retires is not
//! lost: retiring and taking a new stream both happen under the shard's
//! lock, a retired shard refuses the stream, and [`Xread::watch`] then
//! picks (or starts) another shard.
//!
//! On a Redis Cluster one blocking XREAD may only name keys of one slot
//! (Redis answers CROSSSLOT otherwise, even for keys on one node), so a
//! shard there covers the streams of one slot, on a connection straight to
//! that slot's master: a gateway holds one doorbell connection per slot
//! with idle readers (streams sharing a slot share it, up to
//! [`STREAMS_PER_SHARD`]; the position update after a ring pipelines one
//! shard's streams, so it stays in that slot). When the slot moves the
//! shard's read fails with MOVED, and it reconnects to the slot's new
//! master.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use prometheus_client::metrics::gauge::Gauge;

use super::{Counted, Rings};

use crate::broker::{Broker, Waiter, WaiterHandle};
use crate::error::Result;
use crate::ids::StreamId;
use crate::outage::Backoff;
use crate::shutdown::Shutdown;

/// Most streams one shard's blocking read covers.
pub(super) const STREAMS_PER_SHARD: usize = 100;

/// How long a shard nobody waits on keeps its task and connection before
/// it retires: long enough that a subscriber reconnecting after a dropped
/// call (clients retry within a second or two) finds its shard still
/// there, short enough that abandoned shards do not pile up.
pub(super) const SHARD_LINGER: Duration = Duration::from_secs(5);

/// The doorbell's shards, shared with their tasks so that a retiring shard
/// can take itself out. Lock order: this list before a shard's streams.
type Shards = Mutex<Vec<Arc<Shard>>>;

/// The XREAD wake-up of one gateway: shards, started as streams are
/// watched and retired once nobody waits on them.
pub(super) struct Xread {
    broker: Broker,
    block: Duration,
    linger: Duration,
    /// Counts the shards' connections.
    gauge: Gauge,
    shutdown: Shutdown,
    shards: Arc<Shards>,
}

impl Xread {
    /// A wake-up whose shards block at most `block`, retire after `linger`
    /// without readers and stop at `shutdown`. Starts nothing yet.
    pub(super) fn new(
        broker: Broker,
        block: Duration,
        linger: Duration,
        gauge: Gauge,
        shutdown: Shutdown,
    ) -> Xread {
        Xread {
            broker,
            block,
            linger,
            gauge,
            shutdown,
            shards: Arc::default(),
        }
    }

    /// The bell of `stream`, which rings for every entry appended after
    /// this call returns.
    pub(super) async fn watch(&self, stream: &str) -> Result<Rings> {
        loop {
            if let Some(bell) = self.shard_for(stream).watch(stream).await? {
                return Ok(bell);
            }
            // The shard retired between being picked and taking the
            // stream; it is out of the list now, so the next pick differs.
        }
    }

    /// Rings `stream`'s bell if a shard watches it.
    pub(super) fn ring(&self, stream: &str) {
        let shards = lock(&self.shards);
        if let Some(shard) = shards.iter().find(|s| s.watches(stream)) {
            shard.ring_one(stream);
        }
    }

    /// How many shards run (each a task, and a connection while it has
    /// streams or lingers).
    #[cfg(test)]
    pub(super) fn shard_count(&self) -> usize {
        lock(&self.shards).len()
    }

    /// The shard that watches `stream`, else one of its slot with room,
    /// else a new one.
    fn shard_for(&self, stream: &str) -> Arc<Shard> {
        let slot = self.broker.slot(stream);
        let mut shards = lock(&self.shards);
        if let Some(shard) = shards.iter().find(|s| s.watches(stream)) {
            return shard.clone();
        }
        if let Some(shard) = shards
            .iter()
            .find(|s| s.slot == slot && s.len() < STREAMS_PER_SHARD)
        {
            return shard.clone();
        }
        let shard = Shard::start(
            self.broker.clone(),
            slot,
            Timing {
                block: self.block,
                linger: self.linger,
            },
            Arc::downgrade(&self.shards),
            self.gauge.clone(),
            self.shutdown.clone(),
        );
        shards.push(shard.clone());
        shard
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every update is a single step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A shard's timers.
#[derive(Clone, Copy)]
struct Timing {
    /// Longest blocking read.
    block: Duration,
    /// How long the shard stays without streams before it retires.
    linger: Duration,
}

/// One blocking read over up to [`STREAMS_PER_SHARD`] streams.
struct Shard {
    broker: Broker,
    /// The cluster slot of every stream here (`None` on one Redis).
    slot: Option<u16>,
    streams: Mutex<Streams>,
    /// Wakes the task when the first stream is watched.
    changed: Notify,
    /// The waiting connection, to cut its wait short (`None` = none yet).
    waiter: Mutex<Option<WaiterHandle>>,
    /// Counts the shards' connections.
    gauge: Gauge,
}

/// The streams of a shard.
#[derive(Default)]
struct Streams {
    watched: HashMap<String, Watched>,
    /// Set once, under this lock, when the shard retires: from then on it
    /// takes no stream, so none can be added to a shard whose task is gone.
    retired: bool,
}

/// One watched stream.
struct Watched {
    bell: watch::Sender<u64>,
    /// Ring when an entry after this one appears.
    after: StreamId,
}

impl Shard {
    /// Starts the shard's task; it runs until the shard retires or
    /// `shutdown`.
    fn start(
        broker: Broker,
        slot: Option<u16>,
        timing: Timing,
        shards: Weak<Shards>,
        gauge: Gauge,
        shutdown: Shutdown,
    ) -> Arc<Shard> {
        let doorbell = Arc::new(Shard {
            broker,
            slot,
            streams: Mutex::default(),
            changed: Notify::new(),
            waiter: Mutex::new(None),
            gauge,
        });
        shutdown
            .clone()
            .spawn(doorbell.clone().run(timing, shards, shutdown));
        doorbell
    }

    /// Whether `stream` is watched here.
    fn watches(&self, stream: &str) -> bool {
        self.lock().watched.contains_key(stream)
    }

    /// How many streams are watched here (including ones about to be
    /// forgotten).
    fn len(&self) -> usize {
        self.lock().watched.len()
    }

    /// Watching a stream for the first time costs one XREVRANGE and cuts
    /// the shard's current wait short so that the next one includes it.
    /// `None` when the shard retired meanwhile: watch elsewhere.
    async fn watch(&self, stream: &str) -> Result<Option<Rings>> {
        if let Some(bell) = self.existing(stream) {
            return Ok(Some(bell));
        }
        let after = self.broker.last_entry_id(stream).await?;
        let bell = {
            let mut streams = self.lock();
            if streams.retired {
                return Ok(None);
            }
            let watched = streams
                .watched
                .entry(stream.to_owned())
                .or_insert_with(|| Watched {
                    bell: watch::channel(0).0,
                    after,
                });
            watched.bell.subscribe()
        };
        self.changed.notify_one();
        let waiter = self.waiter_handle();
        if let Some(waiter) = waiter {
            // Best effort: without it the new stream joins within a block.
            let _ = self.broker.unblock(&waiter).await;
        }
        Ok(Some(bell))
    }

    fn waiter_handle(&self) -> Option<WaiterHandle> {
        lock(&self.waiter).clone()
    }

    fn set_waiter_handle(&self, handle: Option<WaiterHandle>) {
        *lock(&self.waiter) = handle;
    }

    fn existing(&self, stream: &str) -> Option<Rings> {
        self.lock().watched.get(stream).map(|w| w.bell.subscribe())
    }

    fn lock(&self) -> MutexGuard<'_, Streams> {
        lock(&self.streams)
    }

    /// The watched streams and their positions, forgetting streams nobody
    /// listens to any more.
    fn snapshot(&self) -> (Vec<String>, Vec<String>, Vec<StreamId>) {
        let mut streams = self.lock();
        let watched = &mut streams.watched;
        watched.retain(|_, w| w.bell.receiver_count() > 0);
        let names: Vec<String> = watched.keys().cloned().collect();
        let keys = names.iter().map(|s| self.broker.key(s)).collect();
        let after = names.iter().map(|s| watched[s].after).collect();
        (names, keys, after)
    }

    /// Takes the shard out of the doorbell if it still has no stream
    /// anybody listens to; false (and nothing changes) if it has one,
    /// e.g. a reader that arrived during the linger.
    fn retire(self: &Arc<Self>, shards: &Weak<Shards>) -> bool {
        let shards = shards.upgrade();
        let mut list = shards.as_deref().map(lock);
        let mut streams = self.lock();
        streams.watched.retain(|_, w| w.bell.receiver_count() > 0);
        if !streams.watched.is_empty() {
            return false;
        }
        streams.retired = true;
        if let Some(list) = list.as_mut() {
            list.retain(|s| !Arc::ptr_eq(s, self));
        }
        true
    }

    /// Rings the streams the blocking read saw entries on, at once, then
    /// moves their positions up to their newest entries (one pipelined
    /// round trip for all of them) so that a busy stream rings once per
    /// round, not once per entry. `rung` pairs a stream with the first new
    /// entry the read saw.
    ///
    /// Ringing before the position update keeps that round trip out of the
    /// delivery path. It cannot lose a wake-up: a stream whose newest entry
    /// turns out to be beyond the one the read saw is rung a second time
    /// after the update, so a reader that read between the two rings reads
    /// again; anything appended after the update is after the new position
    /// and wakes the next blocking read.
    async fn ring(&self, rung: Vec<(String, StreamId)>) {
        for (stream, seen) in &rung {
            self.bump(stream, *seen);
        }
        let streams: Vec<&str> = rung.iter().map(|(s, _)| s.as_str()).collect();
        let Ok(newest) = self.broker.last_entry_ids(&streams).await else {
            // The next blocking read starts at what was seen and returns at
            // once if there is more: nothing is missed, only coalescing.
            return;
        };
        for ((stream, seen), newest) in rung.iter().zip(newest) {
            if newest > *seen {
                self.bump(stream, newest);
            }
        }
    }

    /// Moves a stream's position to at least `to` and rings its bell.
    fn bump(&self, stream: &str, to: StreamId) {
        if let Some(watched) = self.lock().watched.get_mut(stream) {
            watched.after = watched.after.max(to);
            watched.bell.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Rings one stream's bell without moving its position.
    fn ring_one(&self, stream: &str) {
        if let Some(watched) = self.lock().watched.get(stream) {
            watched.bell.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Rings every bell: after an error nobody can know what was missed.
    fn ring_all(&self) {
        for watched in self.lock().watched.values() {
            watched.bell.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    async fn run(self: Arc<Self>, timing: Timing, shards: Weak<Shards>, shutdown: Shutdown) {
        let mut waiter: Option<Counted<Waiter>> = None;
        let mut backoff = Backoff::default();
        while !shutdown.is_triggered() {
            let (names, keys, after) = self.snapshot();
            if names.is_empty() {
                // Nobody to wake: linger with the connection in case a
                // reader comes back, then retire (the connection goes with
                // the task).
                tokio::select! {
                    () = shutdown.triggered() => return,
                    () = self.changed.notified() => continue,
                    () = tokio::time::sleep(timing.linger) => {
                        if self.retire(&shards) {
                            return;
                        }
                        continue;
                    }
                }
            }
            let conn = match waiter.as_mut() {
                Some(conn) => conn,
                None => match self.broker.waiter(timing.block, self.slot).await {
                    Ok(conn) => {
                        self.set_waiter_handle(Some(conn.handle.clone()));
                        waiter.insert(Counted::new(conn, &self.gauge))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "doorbell cannot connect");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            // A plain XREAD has no side effects in Redis, so unlike a
            // group read it may be abandoned mid-block: shutdown does not
            // wait for the block to run out.
            let woke = tokio::select! {
                () = shutdown.triggered() => return,
                woke = conn.wait(&keys, &after) => woke,
            };
            match woke {
                Ok(rung) => {
                    backoff = Backoff::default();
                    let rung = rung
                        .into_iter()
                        .map(|(i, seen)| (names[i].clone(), seen))
                        .collect();
                    self.ring(rung).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "doorbell read failed; reconnecting");
                    waiter = None;
                    self.set_waiter_handle(None);
                    // The loops read (and meet the error themselves).
                    self.ring_all();
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}
