//! The tracking wake-up: Redis says which watched stream was written.
//!
//! Each Redis node that holds watched streams gets one task and one
//! tracking connection ([`crate::broker::Tracking`]). Watching a stream
//! arms its key there (an XLEN, which registers it); Redis then sends one
//! invalidation at the key's next write and forgets it. The task rings the
//! stream's bell at once and arms the key again, then rings a second time:
//! an entry appended between the invalidation and the new arm sent no
//! message of its own, and a loop that read before it must read again. So
//! a busy stream costs two rings and one XLEN per round trip of the
//! tracking connection, however many entries it gets, and an idle one
//! costs nothing at all.
//!
//! Nothing is lost when a node's connection is: every stream it watched is
//! rung (the loops read and meet the outage themselves), the task
//! reconnects with backoff and arms all of them again, ringing each once
//! more. On a cluster a key lives on the master of its slot: an arm that
//! meets MOVED follows it (and the slot map is refreshed), one that meets
//! ASK (a slot migrating) arms the key on the target with ASKING, and a
//! connection lost to a failover moves its keys to the slots' new masters.
//! A key migrated away or deleted is invalidated like a write, so its
//! loops wake and read wherever it lives now.
//!
//! A stream whose loops all left is forgotten at its next invalidation, or
//! at the next sweep ([`SWEEP_EVERY`]); a node task left without streams
//! then ends and its connection closes.
//!
//! The first server that refuses tracking (no RESP3, an ACL without
//! `client|tracking`) turns it off for the gateway: that is logged once,
//! and [`Tracker::watch`] answers `None` so that the doorbell uses the
//! XREAD wake-up from then on.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, WeakUnboundedSender};
use tokio::sync::{oneshot, watch};

use prometheus_client::metrics::gauge::Gauge;

use super::{Counted, Rings};
use crate::broker::{Armed, Broker, Invalidation, Node, Refused, Tracking, slot_of};
use crate::error::{Error, Result};
use crate::outage::Backoff;
use crate::shutdown::Shutdown;

/// Most keys armed in one pipeline.
const ARM_BATCH: usize = 1000;

/// How often a node's task forgets streams nobody waits on any more (and
/// ends once it has none): often enough that a gateway that once watched
/// many streams lets their connections go soon, rarely enough to cost
/// nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The node a key is tracked on: `None` on one Redis.
type NodeKey = Option<Node>;

/// The tracking wake-up of one gateway.
pub(super) struct Tracker {
    shared: Arc<Shared>,
}

/// What the tracker and its node tasks share. Lock order: `nodes`, then
/// `watched`; `slots` alone.
struct Shared {
    broker: Broker,
    shutdown: Shutdown,
    /// Watched streams, by Redis key.
    watched: Mutex<HashMap<String, Watched>>,
    /// The request queue of each node's task.
    nodes: Mutex<HashMap<NodeKey, UnboundedSender<Request>>>,
    /// The cluster's slot ranges and their masters, as last seen.
    slots: Mutex<Vec<(u16, u16, Node)>>,
    /// Set once, by the first server that refused tracking.
    refused: OnceLock<Refused>,
    /// Counts the open tracking connections.
    gauge: Gauge,
}

/// One watched stream.
struct Watched {
    bell: watch::Sender<u64>,
    /// The node whose task tracks it.
    node: NodeKey,
}

/// What a node's task is asked to do.
enum Request {
    /// Arm a key.
    Arm(Arm),
    /// A report of the connection of `generation`.
    Report {
        generation: u64,
        invalidation: Invalidation,
    },
}

/// A key to arm, and who waits for it.
struct Arm {
    key: String,
    /// Send ASKING first (the key's slot is migrating to this node).
    asking: bool,
    done: Option<oneshot::Sender<Outcome>>,
}

/// How arming a watched key ended.
enum Outcome {
    Armed,
    /// Tracking is off: use another wake-up.
    Refused,
    /// The node could not be reached.
    Failed(String),
    /// Redis refused to read the key.
    Rejected(redis::RedisError),
}

impl Tracker {
    pub(super) fn new(broker: Broker, gauge: Gauge, shutdown: Shutdown) -> Tracker {
        Tracker {
            shared: Arc::new(Shared {
                broker,
                shutdown,
                watched: Mutex::default(),
                nodes: Mutex::default(),
                slots: Mutex::default(),
                refused: OnceLock::new(),
                gauge,
            }),
        }
    }

    /// Rings `stream`'s bell if it is watched.
    pub(super) fn ring(&self, stream: &str) {
        let key = self.shared.broker.key(stream);
        if let Some(watched) = lock(&self.shared.watched).get(&key) {
            ring(watched);
        }
    }

    /// The bell of `stream`, once its key is armed; `None` when tracking is
    /// refused (use another wake-up).
    pub(super) async fn watch(&self, stream: &str) -> Result<Option<Rings>> {
        let shared = &self.shared;
        if shared.refused.get().is_some() {
            return Ok(None);
        }
        let key = shared.broker.key(stream);
        let home = shared.node_for(&key).await?;
        let (rings, node) = {
            let mut watched = lock(&shared.watched);
            let watched = watched.entry(key.clone()).or_insert_with(|| Watched {
                bell: watch::channel(0).0,
                node: home,
            });
            (watched.bell.subscribe(), watched.node.clone())
        };
        // Armed again even when already watched: the bell is good from the
        // moment an arm completes that began after this call did.
        let (done, outcome) = oneshot::channel();
        shared.send(
            &node,
            Arm {
                key,
                asking: false,
                done: Some(done),
            },
        );
        match outcome.await {
            Ok(Outcome::Armed) => Ok(Some(rings)),
            Ok(Outcome::Refused) => Ok(None),
            Ok(Outcome::Failed(reason)) => Err(Error::Unavailable(reason)),
            Ok(Outcome::Rejected(e)) => Err(Error::from_redis(&e, stream, None)),
            Err(_) => Err(Error::ShuttingDown),
        }
    }
}

impl Tracker {
    /// How many streams are watched (including ones about to be
    /// forgotten).
    #[cfg(test)]
    pub(super) fn watched_count(&self) -> usize {
        lock(&self.shared.watched).len()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every update is a single step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn ring(watched: &Watched) {
    watched.bell.send_modify(|v| *v = v.wrapping_add(1));
}

fn answer(done: Option<oneshot::Sender<Outcome>>, outcome: impl FnOnce() -> Outcome) {
    if let Some(done) = done {
        let _ = done.send(outcome());
    }
}

impl Shared {
    /// The node that serves `key`: on a cluster the master of its slot,
    /// from the slot map (fetched when it has no answer).
    async fn node_for(&self, key: &str) -> Result<NodeKey> {
        if !self.broker.is_cluster() {
            return Ok(None);
        }
        let slot = slot_of(key.as_bytes());
        if let Some(node) = self.master_of(slot) {
            return Ok(Some(node));
        }
        self.refresh_slots().await?;
        self.master_of(slot)
            .map(Some)
            .ok_or_else(|| Error::Unavailable(format!("no cluster node serves slot {slot}")))
    }

    fn master_of(&self, slot: u16) -> Option<Node> {
        lock(&self.slots)
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, node)| node.clone())
    }

    async fn refresh_slots(&self) -> Result<()> {
        let slots = self.broker.slot_masters().await?;
        *lock(&self.slots) = slots;
        Ok(())
    }

    /// Queues `arm` on the task of `node`, starting the task if there is
    /// none (or it just ended).
    fn send(self: &Arc<Self>, node: &NodeKey, arm: Arm) {
        let mut nodes = lock(&self.nodes);
        let mut request = Request::Arm(arm);
        if let Some(queue) = nodes.get(node) {
            match queue.send(request) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => request = back,
            }
        }
        let (queue, requests) = mpsc::unbounded_channel();
        let _ = queue.send(request);
        let task = NodeTask {
            shared: self.clone(),
            node: node.clone(),
            queue: queue.downgrade(),
            generation: 0,
        };
        nodes.insert(node.clone(), queue);
        self.shutdown.spawn(task.run(requests));
    }

    /// Records that `key` now lives on `node` and queues its arm there
    /// (with ASKING when `asking`).
    fn rehome(
        self: &Arc<Self>,
        key: String,
        node: Node,
        asking: bool,
        done: Option<oneshot::Sender<Outcome>>,
    ) {
        let node = Some(node);
        if let Some(watched) = lock(&self.watched).get_mut(&key) {
            watched.node = node.clone();
            ring(watched);
        }
        self.send(&node, Arm { key, asking, done });
    }

    /// The keys tracked on `node`.
    fn keys_on(&self, node: &NodeKey) -> Vec<String> {
        lock(&self.watched)
            .iter()
            .filter(|(_, w)| &w.node == node)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Rings every stream tracked on `node`.
    fn ring_all(&self, node: &NodeKey) {
        for watched in lock(&self.watched).values().filter(|w| &w.node == node) {
            ring(watched);
        }
    }

    /// Turns tracking off for this gateway (logged the first time).
    fn refuse(&self, refused: Refused) {
        let reason = refused.0.clone();
        if self.refused.set(refused).is_ok() {
            tracing::warn!(
                reason = %reason,
                "the server refused CLIENT TRACKING: idle streams are woken by blocking \
                 XREADs instead (a connection per 100 idle streams; see --wakeup)"
            );
        }
    }
}

/// The task of one node: its connection, and the keys waiting to be armed.
struct NodeTask {
    shared: Arc<Shared>,
    node: NodeKey,
    /// This task's own queue, for the connection's reports (weak, so that
    /// the queue closes once the task is out of the node map).
    queue: WeakUnboundedSender<Request>,
    /// Which connection reports come from: a report of an older one is
    /// stale.
    generation: u64,
}

impl NodeTask {
    async fn run(mut self, mut requests: UnboundedReceiver<Request>) {
        let shutdown = self.shared.shutdown.clone();
        let mut conn: Option<Counted<Tracking>> = None;
        let mut pending: Vec<Arm> = Vec::new();
        let mut backoff = Backoff::default();
        let mut sweep =
            tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
        loop {
            // Whatever is queued first: an arm waiting there must be
            // answered even when connecting fails.
            while pending.len() < ARM_BATCH
                && let Ok(request) = requests.try_recv()
            {
                self.handle(request, &mut conn, &mut pending);
            }
            if conn.is_none() && (!pending.is_empty() || self.shared.has_keys_on(&self.node)) {
                match self.connect().await {
                    Ok(tracking) => {
                        backoff = Backoff::default();
                        conn = Some(Counted::new(tracking, &self.shared.gauge));
                        // A new connection tracks nothing yet.
                        pending.extend(self.shared.keys_on(&self.node).into_iter().map(|key| {
                            Arm {
                                key,
                                asking: false,
                                done: None,
                            }
                        }));
                    }
                    Err(outcome) => {
                        self.fail(&mut pending, outcome);
                        tokio::select! {
                            () = shutdown.triggered() => return,
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                        self.move_keys_away().await;
                        self.shared.forget_unwatched(&self.node, &mut pending);
                        continue;
                    }
                }
            }
            if let Some(tracking) = conn.as_mut()
                && !pending.is_empty()
            {
                let batch: Vec<Arm> = pending.drain(..pending.len().min(ARM_BATCH)).collect();
                if let Err(back) = self.arm(tracking, batch).await {
                    conn = None;
                    pending.extend(back);
                }
                continue;
            }
            let request = tokio::select! {
                () = shutdown.triggered() => return,
                _ = sweep.tick() => {
                    if self.sweep(&mut requests) {
                        return;
                    }
                    continue;
                }
                request = requests.recv() => request,
            };
            let Some(request) = request else {
                return;
            };
            self.handle(request, &mut conn, &mut pending);
        }
    }

    /// Opens a tracking connection (a new generation), or says why not:
    /// refused (tracking is then off) or failed.
    async fn connect(&mut self) -> std::result::Result<Tracking, Outcome> {
        self.generation += 1;
        let generation = self.generation;
        let queue = self.queue.clone();
        let report = move |invalidation| {
            if let Some(queue) = queue.upgrade() {
                let _ = queue.send(Request::Report {
                    generation,
                    invalidation,
                });
            }
        };
        match self
            .shared
            .broker
            .tracking(self.node.as_ref(), report)
            .await
        {
            Ok(Ok(tracking)) => Ok(tracking),
            Ok(Err(refused)) => {
                self.shared.refuse(refused);
                Err(Outcome::Refused)
            }
            Err(e) => {
                tracing::debug!(error = %e, node = ?self.node, "tracking connection failed");
                Err(Outcome::Failed(e.to_string()))
            }
        }
    }

    /// After a failed connection: answers whoever waits, rings every
    /// stream of the node (their loops read and meet the outage), and
    /// keeps the keys to arm once connected.
    fn fail(&self, pending: &mut [Arm], outcome: Outcome) {
        let reason = match &outcome {
            Outcome::Failed(reason) => Some(reason.clone()),
            _ => None,
        };
        for arm in pending.iter_mut() {
            answer(arm.done.take(), || match &reason {
                Some(reason) => Outcome::Failed(reason.clone()),
                None => Outcome::Refused,
            });
        }
        self.shared.ring_all(&self.node);
    }

    /// On a cluster, after this node could not be reached: moves the keys
    /// whose slots another master serves now (a failover) to that master.
    async fn move_keys_away(&self) {
        if self.node.is_none() || self.shared.refresh_slots().await.is_err() {
            return;
        }
        for key in self.shared.keys_on(&self.node) {
            if let Some(master) = self.shared.master_of(slot_of(key.as_bytes()))
                && Some(&master) != self.node.as_ref()
            {
                self.shared.rehome(key, master, false, None);
            }
        }
    }

    /// Arms `batch` on `tracking`; gives the batch back when the
    /// connection failed (after ringing every stream of the node).
    async fn arm(
        &self,
        tracking: &mut Tracking,
        batch: Vec<Arm>,
    ) -> std::result::Result<(), Vec<Arm>> {
        // Keys nobody watches any more are not armed; keys tracked
        // elsewhere now go there.
        let mut here = Vec::with_capacity(batch.len());
        for arm in batch {
            let home = lock(&self.shared.watched)
                .get(&arm.key)
                .map(|w| w.node.clone());
            match home {
                None => answer(arm.done, || Outcome::Armed),
                Some(home) if home != self.node => self.shared.send(&home, arm),
                Some(_) => here.push(arm),
            }
        }
        if here.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, bool)> = here.iter().map(|a| (a.key.clone(), a.asking)).collect();
        let armed = match tracking.arm(&keys).await {
            Ok(armed) => armed,
            Err(e) => {
                tracing::debug!(error = %e, node = ?self.node, "tracking connection lost");
                let reason = e.to_string();
                for arm in &mut here {
                    answer(arm.done.take(), || Outcome::Failed(reason.clone()));
                }
                self.shared.ring_all(&self.node);
                return Err(here);
            }
        };
        for (arm, armed) in here.into_iter().zip(armed) {
            match armed {
                Armed::Here => {
                    // The second ring: see the module's comment.
                    if let Some(watched) = lock(&self.shared.watched).get(&arm.key) {
                        ring(watched);
                    }
                    answer(arm.done, || Outcome::Armed);
                }
                Armed::Moved(node) => {
                    let slot = slot_of(arm.key.as_bytes());
                    self.shared.learn(slot, &node);
                    self.shared.rehome(arm.key, node, false, arm.done);
                }
                Armed::Ask(node) => self.shared.rehome(arm.key, node, true, arm.done),
                Armed::Rejected(e) => answer(arm.done, || Outcome::Rejected(e)),
            }
        }
        Ok(())
    }

    /// Takes one request in.
    fn handle(
        &self,
        request: Request,
        conn: &mut Option<Counted<Tracking>>,
        pending: &mut Vec<Arm>,
    ) {
        let invalidation = match request {
            Request::Arm(arm) => {
                pending.push(arm);
                return;
            }
            Request::Report {
                generation,
                invalidation,
            } if generation == self.generation => invalidation,
            Request::Report { .. } => return,
        };
        let mut watched = lock(&self.shared.watched);
        let keys: Vec<String> = match invalidation {
            Invalidation::Keys(keys) => keys,
            Invalidation::All => watched
                .iter()
                .filter(|(_, w)| w.node == self.node)
                .map(|(key, _)| key.clone())
                .collect(),
            Invalidation::Disconnected => {
                // Every key is armed again once connected (see `run`).
                *conn = None;
                for w in watched.values().filter(|w| w.node == self.node) {
                    ring(w);
                }
                return;
            }
        };
        for key in keys {
            let Entry::Occupied(entry) = watched.entry(key) else {
                continue;
            };
            ring(entry.get());
            if entry.get().bell.receiver_count() == 0 {
                entry.remove();
            } else if entry.get().node == self.node {
                pending.push(Arm {
                    key: entry.key().clone(),
                    asking: false,
                    done: None,
                });
            }
        }
    }

    /// Forgets the node's streams nobody waits on. When none is left, takes
    /// the task out of the node map and returns true: the task ends (and
    /// its connection closes); requests that raced in go to a new task.
    fn sweep(&self, requests: &mut UnboundedReceiver<Request>) -> bool {
        let mut nodes = lock(&self.shared.nodes);
        {
            let mut watched = lock(&self.shared.watched);
            watched.retain(|_, w| w.node != self.node || w.bell.receiver_count() > 0);
            if watched.values().any(|w| w.node == self.node) {
                return false;
            }
        }
        if !requests.is_empty() {
            return false;
        }
        nodes.remove(&self.node);
        drop(nodes);
        requests.close();
        while let Ok(request) = requests.try_recv() {
            if let Request::Arm(arm) = request {
                self.shared.send(&self.node, arm);
            }
        }
        true
    }
}

impl Shared {
    /// Whether any stream is tracked on `node`.
    fn has_keys_on(&self, node: &NodeKey) -> bool {
        lock(&self.watched).values().any(|w| &w.node == node)
    }

    /// Forgets the streams of `node` nobody waits on, and drops their
    /// arms from `pending`.
    fn forget_unwatched(&self, node: &NodeKey, pending: &mut Vec<Arm>) {
        let mut watched = lock(&self.watched);
        watched.retain(|_, w| &w.node != node || w.bell.receiver_count() > 0);
        pending.retain(|arm| arm.done.is_some() || watched.contains_key(&arm.key));
    }

    /// Records from a MOVED reply that `node` serves `slot`.
    fn learn(&self, slot: u16, node: &Node) {
        let mut slots = lock(&self.slots);
        slots.retain(|(first, last, _)| !(*first..=*last).contains(&slot));
        slots.push((slot, slot, node.clone()));
    }
}
