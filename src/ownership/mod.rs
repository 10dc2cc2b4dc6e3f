//! Ordered consumption's partition ownership, driven by the gateway for
//! each ordered subscription it serves.
//!
//! Every ordered subscription (Subscribe or Consume with `ordered`) gets
//! a small task, its [`Coordinator`], that every `--rebalance-interval-ms`:
//! renews the consumer's membership and reads the group's members
//! ([`Broker::renew_membership`]); works out its share ([`plan`]); gives
//! up partitions beyond it; takes partitions nobody holds while under it;
//! renews its leases every third of `--partition-lease-ms`. The readers of
//! the subscription's partitions ([`crate::subscription`]) read only while
//! [`Ownership`] says they own the partition, and the read itself checks
//! the lease in Redis, so a stale local view never reads a partition
//! someone else owns.
//!
//! Why no coordinator process: the member list and the leases are in
//! Redis, each member works out its own share from the same list, and a
//! partition is only ever taken when free (`SET NX`). A joining consumer
//! gets its share once the others have given their surplus up, one tick
//! each (about two ticks); one that leaves releases its leases and its
//! membership at once; one whose gateway died is dropped when its
//! membership and leases lapse (the lease time), then its partitions are
//! free.

pub mod plan;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::broker::{Broker, Holder, partition_stream};
use crate::error::Result;
use crate::log_throttle::LogThrottle;
use crate::metrics::{GroupLabels, Metrics, OwnershipLabels};
use crate::shutdown::Shutdown;

/// Ordered consumption's timing.
#[derive(Clone, Copy, Debug)]
pub struct OwnershipOptions {
    /// How long a lease and a membership last without renewal: how long
    /// a dead gateway's partitions stay unowned.
    pub lease: Duration,
    /// How often each ordered subscription renews its membership and
    /// rebalances.
    pub rebalance: Duration,
}

/// The gateway's ordered consumption: its options and metrics.
pub struct Owners {
    options: OwnershipOptions,
    metrics: Arc<Metrics>,
}

/// One partition as its subscription sees it.
#[derive(Clone, Copy, Debug, Default)]
struct Part {
    owned: bool,
    /// Bumped at each acquisition: a reader that sees it move starts over
    /// with the partition's pending entries.
    epoch: u64,
}

/// What a subscription's coordinator and readers share.
struct State {
    parts: Mutex<Vec<Part>>,
    /// Bumped whenever a partition is taken or given up.
    changed: watch::Sender<i64>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Vec<Part>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owned(&self) -> Vec<u32> {
        (self.lock().iter().enumerate())
            .filter(|(_, part)| part.owned)
            .map(|(p, _)| p as u32)
            .collect()
    }

    /// Marks `partition` owned or not; true when that changed it.
    fn set(&self, partition: u32, owned: bool) -> bool {
        let mut parts = self.lock();
        let part = &mut parts[partition as usize];
        if part.owned == owned {
            return false;
        }
        part.owned = owned;
        part.epoch += u64::from(owned);
        drop(parts);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        true
    }
}

/// The partitions one ordered subscription owns, as its readers see them.
/// Dropping the last handle ends the subscription's coordinator, which
/// then releases the leases.
pub struct Ownership {
    state: Arc<State>,
    /// Reporting lost leases.
    tally: Tally,
    _alive: oneshot::Sender<()>,
}

impl Ownership {
    /// The acquisition `partition` is owned under (see [`Part::epoch`]),
    /// or `None` when it is not owned.
    pub fn owned(&self, partition: u32) -> Option<u64> {
        let part = self.state.lock()[partition as usize];
        part.owned.then_some(part.epoch)
    }

    /// The read of `partition` found the lease of acquisition `epoch` gone
    /// (lapsed and taken): stop reading it. The coordinator takes it again
    /// if it is free and within the share.
    pub fn lost(&self, partition: u32, epoch: u64) {
        if self.owned(partition) == Some(epoch) && self.state.set(partition, false) {
            self.tally.change("lost", -1);
        }
    }

    /// Changes whenever a partition is taken or given up.
    pub fn changes(&self) -> watch::Receiver<i64> {
        self.state.changed.subscribe()
    }
}

/// Counts ownership changes of one subscription in the metrics.
#[derive(Clone)]
struct Tally {
    metrics: Arc<Metrics>,
    stream: String,
    group: String,
}

impl Tally {
    /// One `change`, moving the owned gauge by `owned`.
    fn change(&self, change: &'static str, owned: i64) {
        let (stream, group) = (self.stream.clone(), self.group.clone());
        self.metrics
            .ownership_changes
            .get_or_create(&OwnershipLabels {
                stream: stream.clone(),
                group: group.clone(),
                change,
            })
            .inc();
        self.metrics
            .partitions_owned
            .get_or_create(&GroupLabels { stream, group })
            .inc_by(owned);
    }
}

impl Owners {
    /// Ordered consumption with `options`, counted in `metrics`.
    pub fn new(options: OwnershipOptions, metrics: Arc<Metrics>) -> Owners {
        Owners { options, metrics }
    }

    /// Starts the coordinator of one ordered subscription of `holder` to
    /// `group` on `stream` (of `partitions` partitions). It runs until the
    /// returned [`Ownership`] and its clones are gone, or shutdown, and
    /// then releases what it owns.
    pub fn start(
        &self,
        broker: Broker,
        stream: &str,
        group: &str,
        holder: Holder,
        partitions: u32,
        shutdown: &Shutdown,
    ) -> Arc<Ownership> {
        let state = Arc::new(State {
            parts: Mutex::new(vec![Part::default(); partitions as usize]),
            changed: watch::channel(0).0,
        });
        let (alive, gone) = oneshot::channel();
        let tally = Tally {
            metrics: self.metrics.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
        };
        let coordinator = Coordinator {
            broker,
            stream: stream.to_owned(),
            group: group.to_owned(),
            holder,
            partitions,
            options: self.options,
            state: state.clone(),
            tally: tally.clone(),
            renewed: vec![None; partitions as usize],
            draining: Vec::new(),
        };
        shutdown.spawn(coordinator.run(gone, shutdown.clone()));
        Arc::new(Ownership {
            state,
            tally,
            _alive: alive,
        })
    }
}

/// The task behind one ordered subscription's [`Ownership`].
struct Coordinator {
    broker: Broker,
    stream: String,
    group: String,
    holder: Holder,
    partitions: u32,
    options: OwnershipOptions,
    state: Arc<State>,
    tally: Tally,
    /// When each owned partition's lease was last taken or renewed.
    renewed: Vec<Option<Instant>>,
    /// Partitions given up at the last tick whose lease is still held, so
    /// that the consumer's acks of what it already received still count
    /// (see [`Coordinator::give_up`]).
    draining: Vec<u32>,
}

/// Failed rebalance ticks are logged once a minute per gateway.
static TROUBLE: LogThrottle = LogThrottle::new(Duration::from_secs(60));

impl Coordinator {
    async fn run(mut self, mut gone: oneshot::Receiver<()>, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(self.options.rebalance);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut gone => break,
                () = shutdown.triggered() => break,
                _ = ticks.tick() => {}
            }
            if let Err(err) = self.tick().await
                && let Some(count) = TROUBLE.occurred("rebalance", std::time::Instant::now())
            {
                tracing::warn!(
                    stream = %self.stream, group = %self.group, %err, count,
                    "ordered consumption could not rebalance; reads stay fenced by the leases"
                );
            }
        }
        self.leave().await;
    }

    fn partition(&self, p: u32) -> String {
        partition_stream(&self.stream, p)
    }

    fn lease_ms(&self) -> u64 {
        self.options.lease.as_millis().max(1) as u64
    }

    /// One rebalance: membership, share, give up or take, renew.
    async fn tick(&mut self) -> Result<()> {
        let (me, lease_ms) = (self.holder.consumer().to_owned(), self.lease_ms());
        let members = (self.broker)
            .renew_membership(&self.stream, &self.group, &me, lease_ms)
            .await?;
        for p in std::mem::take(&mut self.draining) {
            self.release_lease(p).await?;
        }
        let share = plan::share(&members, &me, self.partitions);
        let owned = self.state.owned();
        if owned.len() as u32 > share {
            for p in plan::surplus(&owned, share) {
                self.give_up(p).await?;
            }
        } else if (owned.len() as u32) < share {
            self.take(&members, &me, share - owned.len() as u32).await?;
        }
        self.renew().await
    }

    /// Takes up to `wanted` partitions nobody holds.
    async fn take(&mut self, members: &[String], me: &str, mut wanted: u32) -> Result<()> {
        let candidates: Vec<u32> = (0..self.partitions)
            .filter(|&p| !self.state.lock()[p as usize].owned)
            .collect();
        let this = &*self;
        let owners = join_all(candidates.iter().map(|&p| {
            let name = this.partition(p);
            async move { this.broker.lease_owner(&name, &this.group).await }
        }))
        .await;
        let mut free = Vec::new();
        for (p, owner) in candidates.into_iter().zip(owners) {
            if owner?.is_none() {
                free.push(p);
            }
        }
        for p in plan::attempts(&free, members, me, self.partitions) {
            if wanted == 0 {
                break;
            }
            let name = self.partition(p);
            let lease_ms = self.lease_ms();
            if (self.broker)
                .acquire_lease(&name, &self.group, &self.holder, lease_ms)
                .await?
            {
                self.renewed[p as usize] = Some(Instant::now());
                self.state.set(p, true);
                self.tally.change("acquired", 1);
                wanted -= 1;
            }
        }
        Ok(())
    }

    /// Gives `partition` up in a rebalance, cooperatively: its reader
    /// stops at once; the lease goes at once if the consumer holds nothing
    /// of the partition, else at the next tick, so that the acks of what it
    /// already received still take effect (the lease fences them) instead
    /// of those entries going to the next owner again. One tick is all a
    /// hand-off waits: a consumer slower than that gets duplicates, not a
    /// stalled rebalance.
    async fn give_up(&mut self, partition: u32) -> Result<()> {
        if self.state.set(partition, false) {
            self.tally.change("released", -1);
        }
        let name = self.partition(partition);
        let held = (self.broker)
            .consumer_pending(&name, &self.group, self.holder.consumer())
            .await?;
        if held == 0 {
            self.release_lease(partition).await
        } else {
            self.draining.push(partition);
            Ok(())
        }
    }

    /// Deletes `partition`'s lease, if still ours.
    async fn release_lease(&mut self, partition: u32) -> Result<()> {
        self.renewed[partition as usize] = None;
        let name = self.partition(partition);
        (self.broker)
            .keep_lease(&name, &self.group, &self.holder, 0)
            .await
            .map(drop)
    }

    /// Renews the leases a third of the lease time old; a lease found
    /// taken, or not renewed for a whole lease time, is lost.
    async fn renew(&mut self) -> Result<()> {
        let now = Instant::now();
        let lease = self.options.lease;
        let due: Vec<u32> = (self.state.owned().into_iter())
            .filter(|&p| self.renewed[p as usize].is_none_or(|at| now >= at + lease / 3))
            .collect();
        let this = &*self;
        let kept = join_all(due.iter().map(|&p| {
            let name = this.partition(p);
            let lease_ms = this.lease_ms();
            async move {
                (this.broker)
                    .keep_lease(&name, &this.group, &this.holder, lease_ms)
                    .await
            }
        }))
        .await;
        let mut failed = None;
        for (p, kept) in due.into_iter().zip(kept) {
            let lapsed = self.renewed[p as usize].is_none_or(|at| now >= at + lease);
            match kept {
                Ok(true) => self.renewed[p as usize] = Some(now),
                Ok(false) => self.lose(p),
                Err(_) if lapsed => self.lose(p),
                Err(err) => failed = Some(err),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn lose(&mut self, partition: u32) {
        self.renewed[partition as usize] = None;
        if self.state.set(partition, false) {
            self.tally.change("lost", -1);
        }
    }

    /// The subscription ended: release every lease and the membership, so
    /// the others take over at their next tick instead of after the lease
    /// time. Best effort: what fails here lapses by itself.
    async fn leave(mut self) {
        for p in self.state.owned() {
            if self.state.set(p, false) {
                self.tally.change("released", -1);
            }
            let _ = self.release_lease(p).await;
        }
        for p in std::mem::take(&mut self.draining) {
            let _ = self.release_lease(p).await;
        }
        let me = self.holder.consumer().to_owned();
        let _ = (self.broker)
            .leave_membership(&self.stream, &self.group, &me)
            .await;
    }
}
