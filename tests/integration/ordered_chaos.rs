//! The ordered checker (issue 23): producers with many keys and a group of
//! ordered consumers run through two gateway processes on one Redis (or a
//! 3 + 3 Redis Cluster) while the test cuts consumers' streams, adds and
//! removes consumers, SIGKILLs a gateway and restarts it and, on the
//! cluster, fails a master over. Every consumer acks the entries of a
//! partition in the order it received them, as the guarantee asks of
//! clients; the test holds the gateway to what the guarantee promises in
//! return (docs/ordered.md).
//!
//! **The run.** `PRODUCERS` producers own `KEYS` keys between them (a key
//! belongs to one producer, so a key's events never race each other; the
//! keys cover every partition); each event carries its key and the key's
//! sequence number, and a producer writes a key's next event only once
//! the previous one is acknowledged (retrying, on the other gateway, with
//! the same idempotency keys). The stream has 12 partitions. Consumers
//! open `Consume` with `ordered`, record every delivery, and ack with
//! in-band Acks, one at a time (the next once the Confirm of the previous
//! came), so a session's acks are applied one after the other in the
//! order sent; a Confirm's `done` list says which acks took effect. What
//! a consumer acks ([`Pace`]): everything it holds after a few ms, or
//! each partition's entries in chunks, partitions side by side. Faults
//! come one at a time ([`Fault`]). A sampler asks `ListPartitions` for
//! the owners every 25 ms all along; after each fault the test waits (with
//! a deadline) until every live consumer owns an even share (floor or
//! ceil of 12 / consumers) and nobody else owns anything, and reports
//! that time for joins, leaves and kills: the rebalance times (reported,
//! not asserted), and for the failover the time from the master's death.
//! After the faults the producers stop and the consumers drain the stream.
//!
//! **Soundness.** Times come from one monotonic clock in the test
//! process. An ack op *sent* at s whose Confirm was *answered* at r did
//! whatever it did in Redis within [s, r]. An op whose Confirm never came
//! (the stream broke) is *uncertain*: it may have taken effect at any time
//! after s. An entry was read in Redis before the test received it and
//! after its event's first Produce attempt was sent. Every check below
//! concludes only from such bounds, so a slow machine can hide a
//! violation but never invent one.
//!
//! - **Nothing lost.** Every event whose Produce was acknowledged is in
//!   the stream under the ID Produce answered (read from Redis itself)
//!   and got an ack that took effect (or an uncertain one), and at the end
//!   `ListPartitions` shows nothing pending and no lag in any partition
//!   (so the uncertain acks took effect, or later ones did).
//! - **Per key, first acks in production order.** For events a < b of one
//!   key, a violation is a confirmed ack of b that provably happened
//!   before every ack of a that may have taken effect (confirmed or
//!   uncertain): b's Confirm was answered before any of them was sent, or
//!   they come after b in the same ack op (applied in order).
//! - **One owner per partition, from the consumers' records.** Reads of a
//!   partition are fenced by its lease, and a new owner first receives the
//!   partition's pending entries (whoever held them), so nothing of a
//!   partition reaches a consumer while an earlier entry of it is pending
//!   with another consumer. The check: an entry d was delivered (to
//!   anyone) before an entry e's event was first sent to Produce, and no
//!   ack of d that may have taken effect was sent before e was received,
//!   so d was pending when e was read; then the session that received e
//!   must have received d before it. Only entries that leave the pending
//!   list by an ack alone qualify (no trimming, dead letters or reclaim
//!   here), and only IDs Produce answered (such an entry survives a
//!   failover, and its ID never names another event). Two readers at
//!   once, a new owner skipping the pending entries, or an owner reading
//!   past an entry it was not given fail it. What it does not flag: a
//!   consumer whose partition went elsewhere and came back. A check that
//!   "the acks never switch back to a consumer that was replaced" would
//!   not be sound: a consumer may lose a partition and take it back at any
//!   rebalance or after a lapsed lease, unseen by clients (only the order
//!   of its acks then tells, which the check above looks at).
//! - **One owner per partition, from `ListPartitions`.** Every sample
//!   names as owners only consumers the test started; after each change
//!   the shares settle to even among the live consumers within a deadline
//!   (a partition nobody takes fails the test); at the end the gateways'
//!   `streamgate_partitions_owned` gauges add up to the 12 partitions.
//!
//! **Scenarios.** `ordered_chaos_standalone` and `ordered_chaos_cluster`
//! run the faults the issue lists. `ordered_chaos_flapping` has consumers
//! work partition by partition while newcomers join and leave again at
//! once, which takes a partition from a consumer and gives it back while
//! it still processes entries of it: were its acks of those entries to
//! take effect once the partition is back, before the earlier entries it
//! was given again, the key order would break. The test at the end of
//! this file reproduces that in a few steps. Both hold because an ordered
//! ack takes effect only for its partition's oldest pending entry.
//!
//! The summary line (`--nocapture`) gives events, keys, rebalances and
//! their times, deliveries, duplicates delivered, acks (uncertain ones)
//! and violations. Each scenario runs its fault schedule once and more
//! for `STREAMGATE_ORDERED_SECS` seconds (default 2: once); a long run:
//! `STREAMGATE_ORDERED_SECS=120 cargo test --release --test integration
//! ordered_chaos -- --nocapture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use streamgate::config::Settings;
use streamgate::pb::stream_admin_client::StreamAdminClient;
use streamgate::pb::{
    self, ConsumeRequest, consume_request, consume_response, event_stream_client::EventStreamClient,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::common::{
    DEADLINE, GatewayProcess, RedisServer, TestGateway, config, event, eventually, subscribe,
};
use crate::metrics::{sample, scrape};
use crate::redis_cluster::RedisCluster;

const STREAM: &str = "orders";
const GROUP: &str = "g";
const PARTITIONS: u32 = 12;
const PRODUCERS: usize = 3;
/// Keys over all producers; key `k` belongs to producer `k % PRODUCERS`.
const KEYS: usize = 24;
/// Consumers at the start, shared over the two gateways.
const FIRST_CONSUMERS: usize = 4;
const REBALANCE_MS: &str = "50";
const LEASE_MS: &str = "1000";
/// Steady traffic after each fault has settled.
const PACE: Duration = Duration::from_millis(300);
/// How long the shares may take to settle after a fault.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the consumers may take to drain the stream at the end.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// An event's identity: its key's number and its sequence number.
type Event = (usize, u64);

/// What happens to the group or its gateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// A consumer drops its stream holding unacked entries, and
    /// reconnects under the same name.
    Cut,
    /// A new consumer joins.
    Join,
    /// A consumer leaves for good.
    Leave,
    /// A consumer joins and leaves as soon as it owns a partition: the
    /// partitions it was given go back.
    Flap,
    /// A gateway is SIGKILLed (its consumers replaced) and restarted.
    Kill,
    /// A master is SIGKILLed with writes its replica lacks; the replica
    /// takes over.
    Failover,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// One Redis: cuts, joins, leaves, a gateway kill.
    Standalone,
    /// The 3 + 3 cluster: the same and a master failover.
    Cluster,
    /// One Redis: consumers that work partition by partition, acking a
    /// chunk of each at a time, while consumers join and leave again at
    /// once.
    Flapping,
}

impl Scenario {
    fn schedule(self) -> &'static [Fault] {
        match self {
            Scenario::Standalone => &[
                Fault::Cut,
                Fault::Join,
                Fault::Cut,
                Fault::Kill,
                Fault::Leave,
            ],
            Scenario::Cluster => &[
                Fault::Cut,
                Fault::Join,
                Fault::Failover,
                Fault::Cut,
                Fault::Kill,
                Fault::Leave,
            ],
            Scenario::Flapping => &[Fault::Flap; 6],
        }
    }

    /// How the consumers work.
    fn pace(self) -> Pace {
        match self {
            Scenario::Flapping => Pace::PerPartition,
            _ => Pace::AllHeld,
        }
    }
}

/// How a consumer acks what it received (always in the order received,
/// one ack at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// Everything it holds, after a few ms (now and then 150 ms).
    AllHeld,
    /// Each partition's entries in chunks, partitions side by side (the
    /// way docs/ordered.md has the Python and Node clients work): a chunk
    /// is processed for 40 to 100 ms, then acked; what arrives meanwhile
    /// is the next chunk.
    PerPartition,
}

impl Pace {
    /// How long the next ack waits.
    fn processing(self, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_millis(match self {
            Pace::AllHeld if rng.u8(..10) == 0 => 150,
            Pace::AllHeld => rng.u64(..25),
            Pace::PerPartition => rng.u64(40..100),
        })
    }
}

// ---------------------------------------------------------------------
// What producers and consumers saw.
// ---------------------------------------------------------------------

/// One delivery of an entry to a consumer session.
struct Delivery {
    session: usize,
    /// Its place in the session's deliveries.
    pos: u64,
    id: String,
    partition: u32,
    event: Event,
    /// When the test received it (ns on the ledger's clock).
    at: u64,
}

/// One in-band Ack.
struct AckOp {
    session: usize,
    /// When it was sent.
    sent: u64,
    /// When its Confirm came; `None`: never (uncertain).
    answered: Option<u64>,
    /// The entries, in the order acked.
    entries: Vec<(String, Event)>,
    /// Per entry, whether the Confirm listed it as done.
    done: Vec<bool>,
}

#[derive(Default)]
struct Records {
    /// When each event's first Produce attempt was sent.
    attempted: HashMap<Event, u64>,
    /// The ID Produce answered for each acknowledged event.
    acknowledged: HashMap<Event, String>,
    /// Each Consume session's consumer name.
    sessions: Vec<String>,
    deliveries: Vec<Delivery>,
    ops: Vec<AckOp>,
    /// Events with an ack that took effect or may have.
    maybe_acked: HashSet<Event>,
    /// Protocol oddities (a Confirm that answers nothing, ...).
    anomalies: Vec<String>,
    produce_retries: u64,
    /// Streams cut holding unacked entries.
    cuts: u64,
}

struct Ledger {
    t0: Instant,
    records: Mutex<Records>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            t0: Instant::now(),
            records: Mutex::new(Records::default()),
        }
    }

    /// Nanoseconds since the run started.
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unacked(&self) -> usize {
        let records = self.lock();
        (records.acknowledged.keys())
            .filter(|e| !records.maybe_acked.contains(*e))
            .count()
    }
}

impl Records {
    /// The Confirm of op `op`, answered at `at`. An op may name an entry
    /// twice (delivered again before it was acked): the first of them
    /// takes effect, the second is not pending any more.
    fn confirm(&mut self, op: usize, confirm: pb::Confirm, at: u64) {
        let mut done: HashMap<String, usize> = HashMap::new();
        for id in confirm.done {
            *done.entry(id).or_default() += 1;
        }
        let mut answers = done.clone();
        for id in confirm.not_pending {
            *answers.entry(id).or_default() += 1;
        }
        let record = &mut self.ops[op];
        record.answered = Some(at);
        let mut asked: HashMap<&str, usize> = HashMap::new();
        record.done = Vec::new();
        for (id, _) in &record.entries {
            *asked.entry(id).or_default() += 1;
            let left = done.get_mut(id);
            record.done.push(left.is_some_and(|n| {
                let some = *n > 0;
                *n = n.saturating_sub(1);
                some
            }));
        }
        let mut anomalies: Vec<String> = (answers.keys())
            .filter(|id| !asked.contains_key(id.as_str()))
            .map(|id| format!("a Confirm answers {id}, which its ack did not name"))
            .collect();
        for (id, n) in &asked {
            let (d, a) = (done.get(*id).copied(), answers.get(*id).copied());
            if a != Some(*n) || d.is_some_and(|left| left > 0) {
                anomalies.push(format!(
                    "an ack of {id} ({n} times) answered {a:?} times, with done left over {d:?}"
                ));
            }
        }
        let events: Vec<Event> = (record.entries.iter().zip(&record.done))
            .filter(|(_, done)| **done)
            .map(|((_, event), _)| *event)
            .collect();
        self.maybe_acked.extend(events);
        self.anomalies.extend(anomalies);
    }

    /// Op `op` will get no Confirm: whatever it asked may have happened.
    fn uncertain(&mut self, op: usize) {
        let events: Vec<Event> = self.ops[op].entries.iter().map(|(_, e)| *e).collect();
        self.maybe_acked.extend(events);
    }

    /// Deliveries beyond the first of each event.
    fn duplicates(&self) -> usize {
        let distinct: HashSet<Event> = self.deliveries.iter().map(|d| d.event).collect();
        self.deliveries.len() - distinct.len()
    }

    fn uncertain_ops(&self) -> usize {
        self.ops.iter().filter(|op| op.answered.is_none()).count()
    }

    /// Events with a confirmed ack.
    fn events_acked(&self) -> usize {
        let mut acked = HashSet::new();
        for op in self.ops.iter().filter(|op| op.answered.is_some()) {
            for ((_, event), done) in op.entries.iter().zip(&op.done) {
                if *done {
                    acked.insert(*event);
                }
            }
        }
        acked.len()
    }

    /// Per key, a confirmed ack of a later event that provably happened
    /// before every ack of an earlier event that may have taken effect.
    fn order_violations(&self) -> Vec<String> {
        #[derive(Clone, Copy)]
        struct At {
            op: usize,
            pos: usize,
        }
        let mut maybe: HashMap<Event, Vec<At>> = HashMap::new();
        let mut confirmed: HashMap<Event, Vec<At>> = HashMap::new();
        for (op, record) in self.ops.iter().enumerate() {
            for (pos, (_, event)) in record.entries.iter().enumerate() {
                let at = At { op, pos };
                match record.answered {
                    None => maybe.entry(*event).or_default().push(at),
                    Some(_) if record.done[pos] => {
                        maybe.entry(*event).or_default().push(at);
                        confirmed.entry(*event).or_default().push(at);
                    }
                    Some(_) => {}
                }
            }
        }
        let mut by_key: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (key, seq) in maybe.keys() {
            by_key.entry(*key).or_default().push(*seq);
        }
        let first_sent = |event: &Event| -> u64 {
            maybe[event]
                .iter()
                .map(|at| self.ops[at.op].sent)
                .min()
                .unwrap()
        };
        // The first violation found per event acked too early.
        let mut violations: BTreeMap<Event, String> = BTreeMap::new();
        for (key, mut seqs) in by_key {
            seqs.sort_unstable();
            // The latest first-ack lower bound of the events so far.
            let mut latest: Option<(u64, u64)> = None;
            for &b in &seqs {
                for x in confirmed.get(&(key, b)).into_iter().flatten() {
                    let op = &self.ops[x.op];
                    let answered = op.answered.unwrap();
                    if let Some((sent, a)) = latest
                        && sent > answered
                    {
                        violations.entry((key, b)).or_insert(format!(
                            "key k{key:02}: seq {b} was first acked (session {} {}, answered at {}) \
                             before any ack of seq {a} was sent (first at {})",
                            op.session,
                            self.sessions[op.session],
                            ms(answered),
                            ms(sent)
                        ));
                    }
                    // Earlier events later in the same op: applied after b.
                    for (pos, (_, (k, a))) in op.entries.iter().enumerate().skip(x.pos + 1) {
                        if *k != key || *a >= b {
                            continue;
                        }
                        let after = maybe[&(key, *a)].iter().all(|y| {
                            (y.op == x.op && y.pos > x.pos) || self.ops[y.op].sent > answered
                        });
                        if after {
                            violations.entry((key, b)).or_insert(format!(
                                "key k{key:02}: seq {b} was acked before seq {a} in one ack \
                                 (session {} {}, positions {} and {pos}), the first ack of either",
                                op.session, self.sessions[op.session], x.pos
                            ));
                        }
                    }
                }
                let sent = first_sent(&(key, b));
                if latest.is_none_or(|(s, _)| sent > s) {
                    latest = Some((sent, b));
                }
            }
        }
        violations.into_values().collect()
    }

    /// A consumer received an entry of a partition while an earlier entry
    /// of it was pending with someone else and had not been given to it.
    fn read_past_pending(&self) -> Vec<String> {
        // IDs that always named one event.
        let mut named: HashMap<&str, HashSet<Event>> = HashMap::new();
        for d in &self.deliveries {
            named.entry(&d.id).or_default().insert(d.event);
        }
        for (event, id) in &self.acknowledged {
            named.entry(id).or_default().insert(*event);
        }
        let mut first_delivered: HashMap<&str, u64> = HashMap::new();
        let mut given: HashMap<(usize, &str), u64> = HashMap::new();
        for d in &self.deliveries {
            let at = first_delivered.entry(&d.id).or_insert(d.at);
            *at = (*at).min(d.at);
            given.entry((d.session, &d.id)).or_insert(d.pos);
        }
        let mut first_ack: HashMap<&str, u64> = HashMap::new();
        for op in &self.ops {
            for (pos, (id, _)) in op.entries.iter().enumerate() {
                if op.answered.is_none() || op.done[pos] {
                    let sent = first_ack.entry(id).or_insert(op.sent);
                    *sent = (*sent).min(op.sent);
                }
            }
        }
        // Per partition: the candidates d (pending from `from` until at
        // least `until`), and the deliveries e.
        struct Pending<'a> {
            id: &'a str,
            order: (u64, u64),
            from: u64,
            until: u64,
        }
        let mut pending: BTreeMap<u32, Vec<Pending>> = BTreeMap::new();
        for id in self.acknowledged.values() {
            let (Some(&from), true) = (
                first_delivered.get(id.as_str()),
                named[id.as_str()].len() == 1,
            ) else {
                continue;
            };
            let (partition, order) = parse_id(id);
            pending.entry(partition).or_default().push(Pending {
                id,
                order,
                from,
                until: first_ack.get(id.as_str()).copied().unwrap_or(u64::MAX),
            });
        }
        let mut reads: BTreeMap<u32, Vec<&Delivery>> = BTreeMap::new();
        for d in &self.deliveries {
            reads.entry(d.partition).or_default().push(d);
        }
        let mut violations = Vec::new();
        for (partition, mut reads) in reads {
            let Some(mut candidates) = pending.remove(&partition) else {
                continue;
            };
            candidates.sort_by_key(|c| c.from);
            let produced = |d: &Delivery| self.attempted[&d.event];
            reads.sort_by_key(|d| produced(d));
            let mut next = 0;
            let mut active: Vec<&Pending> = Vec::new();
            for e in reads {
                let low = produced(e);
                while next < candidates.len() && candidates[next].from < low {
                    active.push(&candidates[next]);
                    next += 1;
                }
                active.retain(|c| c.until > low);
                let (_, order) = parse_id(&e.id);
                for c in &active {
                    let before = given
                        .get(&(e.session, c.id))
                        .is_some_and(|&pos| pos < e.pos);
                    if c.until > e.at && c.order < order && !before {
                        // One per delivery: the first entry it passed.
                        violations.push(format!(
                            "session {} ({}) received {} at {} while {} was pending (delivered \
                             at {}, first ack sent {}) and not given to it before",
                            e.session,
                            self.sessions[e.session],
                            e.id,
                            ms(e.at),
                            c.id,
                            ms(c.from),
                            if c.until == u64::MAX {
                                "never".to_owned()
                            } else {
                                format!("at {}", ms(c.until))
                            }
                        ));
                        break;
                    }
                }
            }
        }
        violations
    }
}

/// Milliseconds, for messages.
fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// `p/ms-seq` as (partition, (ms, seq)).
fn parse_id(id: &str) -> (u32, (u64, u64)) {
    let (partition, rest) = id.split_once('/').expect("a qualified ID");
    let (ms, seq) = rest.split_once('-').expect("ms-seq");
    (
        partition.parse().unwrap(),
        (ms.parse().unwrap(), seq.parse().unwrap()),
    )
}

fn key_name(key: usize) -> String {
    format!("k{key:02}")
}

fn identity(entry: &pb::Entry) -> Event {
    let key = entry
        .key
        .strip_prefix('k')
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("an entry with a test key: {entry:?}"));
    let seq = entry.fields.get("seq").and_then(|s| s.parse().ok());
    (key, seq.unwrap_or_else(|| panic!("a seq field: {entry:?}")))
}

fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

// ---------------------------------------------------------------------
// Producers and consumers.
// ---------------------------------------------------------------------

/// Writes one event for each of its keys per request, each key's next
/// event only once the previous one is acknowledged; a failed request is
/// retried (on the other gateway) with the same idempotency keys.
async fn producer(n: usize, addrs: Vec<String>, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut clients: Vec<_> = addrs
        .iter()
        .map(|a| EventStreamClient::new(channel(a)))
        .collect();
    let keys: Vec<usize> = (0..KEYS).filter(|k| k % PRODUCERS == n).collect();
    let mut gateway = n % clients.len();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let events: Vec<pb::Event> = keys
            .iter()
            .map(|&k| pb::Event {
                key: key_name(k),
                idempotency_key: format!("{}-{seq}", key_name(k)),
                ..event("order.paid", &[("seq", &seq.to_string())])
            })
            .collect();
        {
            let sent = ledger.now();
            let mut records = ledger.lock();
            for &k in &keys {
                records.attempted.entry((k, seq)).or_insert(sent);
            }
        }
        loop {
            let request = pb::ProduceRequest {
                stream: STREAM.into(),
                events: events.clone(),
                ..Default::default()
            };
            let call = clients[gateway].produce(request);
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(response)) => {
                    let ids = response.into_inner().ids;
                    assert_eq!(ids.len(), keys.len(), "an ID per event");
                    let mut records = ledger.lock();
                    for (&k, id) in keys.iter().zip(ids) {
                        records.acknowledged.insert((k, seq), id);
                    }
                    break;
                }
                _ if stop.load(Ordering::Relaxed) => return,
                _ => {
                    ledger.lock().produce_retries += 1;
                    gateway = (gateway + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a consumer received and has not acked yet, in lanes: one for
/// everything (`Pace::AllHeld`) or one per partition.
#[derive(Default)]
struct Work {
    lanes: BTreeMap<u32, Lane>,
}

#[derive(Default)]
struct Lane {
    /// Being processed, acked together when due.
    current: Vec<(String, Event)>,
    due: Option<tokio::time::Instant>,
    /// Received meanwhile (per partition): the next chunk.
    next: Vec<(String, Event)>,
}

impl Work {
    fn receive(
        &mut self,
        pace: Pace,
        rng: &mut fastrand::Rng,
        partition: u32,
        entry: (String, Event),
    ) {
        let lane = match pace {
            Pace::AllHeld => 0,
            Pace::PerPartition => partition,
        };
        let lane = self.lanes.entry(lane).or_default();
        if lane.current.is_empty() {
            lane.due = Some(tokio::time::Instant::now() + pace.processing(rng));
            lane.current.push(entry);
        } else if pace == Pace::AllHeld {
            lane.current.push(entry);
        } else {
            lane.next.push(entry);
        }
    }

    fn holds(&self) -> bool {
        self.lanes.values().any(|lane| !lane.current.is_empty())
    }

    /// When the next chunk is done.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.lanes.values().filter_map(|lane| lane.due).min()
    }

    /// The chunk done first; the next one of its lane starts.
    fn take(&mut self, pace: Pace, rng: &mut fastrand::Rng) -> Vec<(String, Event)> {
        let Some(lane) = (self.lanes.values_mut())
            .filter(|lane| lane.due.is_some())
            .min_by_key(|lane| lane.due)
        else {
            return Vec::new();
        };
        let done = std::mem::replace(&mut lane.current, std::mem::take(&mut lane.next));
        lane.due =
            (!lane.current.is_empty()).then(|| tokio::time::Instant::now() + pace.processing(rng));
        done
    }
}

/// A consumer the test started, and what the test asks of it.
struct Member {
    name: String,
    /// Drop the stream now, then reconnect.
    cut: AtomicBool,
    /// Drop the stream and stop.
    retire: AtomicBool,
}

/// One ordered consumer: a Consume session after another under one name,
/// on one gateway, until retired or the run is done.
async fn consumer(
    member: Arc<Member>,
    addr: String,
    pace: Pace,
    ledger: Arc<Ledger>,
    done: Arc<AtomicBool>,
) {
    let mut client = EventStreamClient::new(channel(&addr));
    let seed = (member.name.bytes()).fold(7u64, |h, b| h.wrapping_mul(31) + u64::from(b));
    let mut rng = fastrand::Rng::with_seed(seed);
    let over = || done.load(Ordering::Relaxed) || member.retire.load(Ordering::Relaxed);
    while !over() {
        let (requests, rx) = mpsc::channel(64);
        let open = pb::SubscribeRequest {
            stream: STREAM.into(),
            group: GROUP.into(),
            consumer: member.name.clone(),
            batch_size: 20,
            create_group: true,
            group_start_id: "0".into(),
            ordered: true,
            ..Default::default()
        };
        let first = ConsumeRequest {
            kind: Some(consume_request::Kind::Open(open)),
        };
        requests.send(first).await.unwrap();
        let call = client.consume(ReceiverStream::new(rx));
        let Ok(Ok(responses)) = tokio::time::timeout(Duration::from_secs(10), call).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut responses = responses.into_inner();
        let session = {
            let mut records = ledger.lock();
            records.sessions.push(member.name.clone());
            records.sessions.len() - 1
        };
        let mut work = Work::default();
        let mut outstanding: Option<usize> = None;
        let mut pos = 0u64;
        loop {
            if over() {
                break;
            }
            // A cut drops the stream while it holds unacked entries.
            if work.holds() && member.cut.swap(false, Ordering::Relaxed) {
                ledger.lock().cuts += 1;
                break;
            }
            let due = work.due().filter(|_| outstanding.is_none());
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                message = responses.message() => {
                    let Ok(Some(message)) = message else { break };
                    match message.kind {
                        Some(consume_response::Kind::Batch(batch)) => {
                            let at = ledger.now();
                            let mut records = ledger.lock();
                            for entry in batch.entries {
                                let event = identity(&entry);
                                records.deliveries.push(Delivery {
                                    session,
                                    pos,
                                    id: entry.id.clone(),
                                    partition: entry.partition,
                                    event,
                                    at,
                                });
                                pos += 1;
                                work.receive(pace, &mut rng, entry.partition, (entry.id, event));
                            }
                        }
                        Some(consume_response::Kind::Confirm(confirm)) => {
                            let at = ledger.now();
                            let mut records = ledger.lock();
                            match outstanding.take() {
                                Some(op) => records.confirm(op, confirm, at),
                                None => records
                                    .anomalies
                                    .push(format!("a Confirm that answers no ack: {confirm:?}")),
                            }
                        }
                        _ => {}
                    }
                }
                () = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                    let entries = work.take(pace, &mut rng);
                    let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
                    let op = {
                        let sent = ledger.now();
                        let mut records = ledger.lock();
                        records.ops.push(AckOp {
                            session,
                            sent,
                            answered: None,
                            done: Vec::new(),
                            entries,
                        });
                        records.ops.len() - 1
                    };
                    outstanding = Some(op);
                    let ack = ConsumeRequest {
                        kind: Some(consume_request::Kind::Ack(pb::AckIds { ids })),
                    };
                    if requests.send(ack).await.is_err() {
                        break;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(25)) => {}
            }
        }
        if let Some(op) = outstanding {
            ledger.lock().uncertain(op);
        }
        // Dropping the stream with `work` unacked: it must come back.
        drop(responses);
        drop(requests);
    }
}

// ---------------------------------------------------------------------
// Redis, gateways, and the faults.
// ---------------------------------------------------------------------

enum Backend {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    fn start(scenario: Scenario) -> Backend {
        match scenario {
            Scenario::Standalone | Scenario::Flapping => Backend::Standalone(RedisServer::start()),
            // A short node timeout: the replica takes over quickly.
            Scenario::Cluster => Backend::Cluster(RedisCluster::start_with(1000)),
        }
    }

    /// Flags for the gateways, `--redis-url` aside.
    fn gateway_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = [
            "--rebalance-interval-ms",
            REBALANCE_MS,
            "--partition-lease-ms",
            LEASE_MS,
            // No retention cap: trimming entries would look like loss.
            "--max-len",
            "0",
            "--redis-timeout-ms",
            "2000",
            "--redis-outage-grace-ms",
            "30000",
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Backend::Cluster(_) = self {
            // Produce answers once a replica holds the write.
            flags.extend(["--redis-cluster", "--produce-wait-replicas", "1"].map(str::to_owned));
        }
        flags
    }

    /// `--redis-url`: the server, or every node of the cluster.
    fn url(&self) -> String {
        match self {
            Backend::Standalone(redis) => redis.url(),
            Backend::Cluster(cluster) => cluster.seeds(&[0, 1, 2, 3, 4, 5]),
        }
    }

    /// Every entry of the stream, read from Redis itself: qualified ID to
    /// event.
    fn stored(&self) -> HashMap<String, Event> {
        let mut conn: Box<dyn redis::ConnectionLike> = match self {
            Backend::Standalone(redis) => Box::new(redis.conn()),
            Backend::Cluster(cluster) => Box::new(cluster.conn()),
        };
        let mut stored = HashMap::new();
        for p in 0..PARTITIONS {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(format!("{STREAM}{{{p}"))
                .arg("-")
                .arg("+")
                .query(conn.as_mut())
                .expect("XRANGE");
            for entry in reply.ids {
                let key: String = entry.get("partition_key").expect("a key");
                let seq: String = entry.get("seq").expect("a seq");
                let key = key.strip_prefix('k').unwrap().parse().unwrap();
                stored.insert(format!("{p}/{}", entry.id), (key, seq.parse().unwrap()));
            }
        }
        stored
    }
}

/// The two gateway processes.
struct Gateways {
    procs: Vec<GatewayProcess>,
    metrics: Vec<SocketAddr>,
    addrs: Vec<String>,
    admin: Vec<StreamAdminClient<Channel>>,
}

impl Gateways {
    fn start(backend: &Backend) -> Gateways {
        let (url, flags) = (backend.url(), backend.gateway_flags());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let procs: Vec<GatewayProcess> = (0..2)
            .map(|_| GatewayProcess::start(&url, "127.0.0.1:0", &flags))
            .collect();
        let metrics = procs
            .iter()
            .map(|p| p.line_after("metrics on ").parse().unwrap())
            .collect();
        let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
        let admin = addrs
            .iter()
            .map(|a| StreamAdminClient::new(channel(a)))
            .collect();
        Gateways {
            procs,
            metrics,
            addrs,
            admin,
        }
    }

    fn restart(&mut self, i: usize) {
        self.procs[i].restart();
        self.metrics[i] = self.procs[i].line_after("metrics on ").parse().unwrap();
    }
}

/// The partitions as the first gateway that answers sees them.
async fn list_partitions(admin: &[StreamAdminClient<Channel>]) -> Option<Vec<pb::PartitionInfo>> {
    for admin in admin {
        let mut admin = admin.clone();
        let call = admin.list_partitions(pb::ListPartitionsRequest {
            stream: STREAM.into(),
            group: GROUP.into(),
        });
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            return Some(response.into_inner().partitions);
        }
    }
    None
}

/// One `ListPartitions` answer.
#[derive(Clone)]
struct Sample {
    /// When it was asked for and answered.
    sent: Instant,
    answered: Instant,
    partitions: Vec<pb::PartitionInfo>,
}

/// What the sampler saw.
#[derive(Default)]
struct Samples {
    /// Every consumer name the test started.
    known: HashSet<String>,
    latest: Option<Sample>,
    taken: u64,
    /// Owners named in samples that are no consumer of the test.
    strays: Vec<String>,
}

/// Asks for the partitions every 25 ms, all along the run, and checks
/// that their owners are consumers of the test.
async fn sampler(
    admin: Vec<StreamAdminClient<Channel>>,
    samples: Arc<Mutex<Samples>>,
    done: Arc<AtomicBool>,
) {
    while !done.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if let Some(partitions) = list_partitions(&admin).await {
            let answered = Instant::now();
            let mut samples = samples.lock().unwrap();
            samples.taken += 1;
            let strays: Vec<String> = (partitions.iter())
                .filter(|p| !p.owner.is_empty() && !samples.known.contains(&p.owner))
                .map(|p| format!("partition {} owned by {:?}", p.partition, p.owner))
                .collect();
            samples.strays.extend(strays);
            samples.latest = Some(Sample {
                sent,
                answered,
                partitions,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A live consumer.
struct Live {
    gateway: usize,
    member: Arc<Member>,
}

/// The fault driver: starts and stops consumers, injects faults, samples
/// `ListPartitions` and measures how long the shares take to settle.
struct Chaos {
    ledger: Arc<Ledger>,
    gateways: Gateways,
    live: BTreeMap<String, Live>,
    pace: Pace,
    samples: Arc<Mutex<Samples>>,
    tasks: Vec<JoinHandle<()>>,
    done: Arc<AtomicBool>,
    next_name: usize,
    /// Per join, leave or kill, how long the shares took to settle.
    rebalances: Vec<(Fault, Duration)>,
    /// Per failover, from the master's death to even shares.
    failovers: Vec<Duration>,
    notes: Vec<String>,
}

impl Chaos {
    fn join(&mut self, gateway: usize) -> String {
        let name = format!("c{:02}", self.next_name);
        self.next_name += 1;
        let member = Arc::new(Member {
            name: name.clone(),
            cut: AtomicBool::new(false),
            retire: AtomicBool::new(false),
        });
        self.samples.lock().unwrap().known.insert(name.clone());
        self.tasks.push(tokio::spawn(consumer(
            member.clone(),
            self.gateways.addrs[gateway].clone(),
            self.pace,
            self.ledger.clone(),
            self.done.clone(),
        )));
        self.live.insert(name.clone(), Live { gateway, member });
        name
    }

    fn retire(&mut self, name: &str) {
        let live = self.live.remove(name).expect("a live consumer");
        live.member.retire.store(true, Ordering::Relaxed);
    }

    fn on(&self, gateway: usize) -> Vec<String> {
        (self.live.iter())
            .filter(|(_, l)| l.gateway == gateway)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether every live consumer owns an even share and nobody else
    /// owns anything.
    fn even(&self, partitions: &[pb::PartitionInfo]) -> bool {
        let mut shares: BTreeMap<&str, u32> = BTreeMap::new();
        for p in partitions {
            if !self.live.contains_key(&p.owner) {
                return false;
            }
            *shares.entry(&p.owner).or_default() += 1;
        }
        let m = self.live.len() as u32;
        let (low, high) = (PARTITIONS / m, PARTITIONS.div_ceil(m));
        partitions.len() == PARTITIONS as usize
            && shares.len() == self.live.len()
            && shares.values().all(|&n| n == low || n == high)
    }

    /// Waits until a sample asked for after `since` shows even shares;
    /// answers the time from `since` to its answer.
    async fn settle(&mut self, since: Instant, what: &str) -> Duration {
        loop {
            let latest = self.samples.lock().unwrap().latest.clone();
            if let Some(sample) = &latest
                && sample.sent > since
                && self.even(&sample.partitions)
            {
                return sample.answered - since;
            }
            assert!(
                since.elapsed() < SETTLE_DEADLINE,
                "after {what}, the shares did not settle within {SETTLE_DEADLINE:?} among {:?}; \
                 the owners last seen: {:?}",
                self.live.keys().collect::<Vec<_>>(),
                latest.map(|s| s
                    .partitions
                    .into_iter()
                    .map(|p| p.owner)
                    .collect::<Vec<_>>())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Injects `fault`, then waits until the shares are even again; the
    /// time that takes is a rebalance time (for a failover, the time
    /// from the master's death).
    async fn fault(&mut self, fault: Fault, backend: &mut Backend, round: usize) {
        let mut since = Instant::now();
        match fault {
            Fault::Cut => {
                let names: Vec<&String> = self.live.keys().collect();
                let name = names[round % names.len()].clone();
                let member = self.live[&name].member.clone();
                member.cut.store(true, Ordering::Relaxed);
                eventually(&format!("{name} cuts its stream"), || {
                    let cut = !member.cut.load(Ordering::Relaxed);
                    async move { cut.then_some(()) }
                })
                .await;
            }
            Fault::Join => {
                let fewer = usize::from(self.on(1).len() < self.on(0).len());
                let name = self.join(fewer);
                self.notes.push(format!("{name} joined"));
            }
            Fault::Flap => {
                let fewer = usize::from(self.on(1).len() < self.on(0).len());
                let name = self.join(fewer);
                let samples = self.samples.clone();
                eventually(&format!("{name} owns a partition"), || {
                    let owns = (samples.lock().unwrap().latest.as_ref())
                        .is_some_and(|s| s.partitions.iter().any(|p| p.owner == name));
                    async move { owns.then_some(()) }
                })
                .await;
                self.retire(&name);
            }
            Fault::Leave => {
                let more = usize::from(self.on(1).len() > self.on(0).len());
                let name = self.on(more)[0].clone();
                self.retire(&name);
                self.notes.push(format!("{name} left"));
            }
            Fault::Kill => {
                let gateway = round % 2;
                tokio::task::block_in_place(|| self.gateways.procs[gateway].kill());
                since = Instant::now();
                let dead = self.on(gateway);
                for name in &dead {
                    self.retire(name);
                }
                let fresh: Vec<String> = dead.iter().map(|_| self.join(1 - gateway)).collect();
                tokio::task::block_in_place(|| self.gateways.restart(gateway));
                self.notes.push(format!(
                    "gateway {gateway} killed and restarted: {dead:?} replaced by {fresh:?}"
                ));
            }
            Fault::Failover => {
                let Backend::Cluster(cluster) = backend else {
                    unreachable!("a failover needs the cluster")
                };
                let (note, killed) = fail_over(cluster).await;
                since = killed;
                self.notes.push(note);
            }
        }
        let took = self.settle(since, &format!("{fault:?}")).await;
        match fault {
            Fault::Cut => {}
            Fault::Failover => self.failovers.push(took),
            _ => self.rebalances.push((fault, took)),
        }
    }
}

/// Fails over the master (not node 0, which the test's own connections
/// use) serving the most partitions: cuts its replica's link and keeps it
/// cut, waits until the master has taken writes the replica lacks, kills
/// it, waits until the replica is promoted, and brings the killed node
/// back as its replica. Answers what happened and when the master died.
async fn fail_over(cluster: &mut RedisCluster) -> (String, Instant) {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let port = cluster.master_of(&format!("{STREAM}{{{p}")).port();
        *counts.entry(port).or_default() += 1;
    }
    let node0 = cluster.nodes[0].port();
    let (&port, &served) = (counts.iter())
        .filter(|(port, _)| **port != node0)
        .max_by_key(|(_, n)| **n)
        .expect("a master other than node 0 serves partitions");
    let victim = cluster.index_of(port);
    let replica = cluster.replica_of(victim);
    let info =
        |index: usize, section: &str, field: &str| cluster.nodes[index].info_field(section, field);
    eventually("the victim's replica has synced", || {
        let up = info(replica, "replication", "master_link_status").as_deref() == Some("up");
        async move { up.then_some(()) }
    })
    .await;
    cut_replication(&cluster.nodes[replica]);
    let offset = |cluster: &RedisCluster| -> (u64, bool) {
        let master = &cluster.nodes[victim];
        let offset = (master.info_field("replication", "master_repl_offset"))
            .and_then(|v| v.parse().ok())
            .expect("master_repl_offset");
        let alone = master
            .info_field("replication", "connected_slaves")
            .as_deref()
            == Some("0");
        (offset, alone)
    };
    let cut_at = eventually("the master notices the cut link", || {
        let (at, alone) = offset(cluster);
        async move { alone.then_some(at) }
    })
    .await;
    eventually("writes the replica has not received", || {
        let (at, alone) = offset(cluster);
        async move { (alone && at > cut_at).then_some(()) }
    })
    .await;
    tokio::task::block_in_place(|| cluster.nodes[victim].kill());
    let killed = Instant::now();
    eventually("the replica is promoted", || {
        let role = cluster.nodes[replica].info_field("replication", "role");
        async move { (role.as_deref() == Some("master")).then_some(()) }
    })
    .await;
    let promoted = killed.elapsed();
    restore_replication(&cluster.nodes[replica]);
    tokio::task::block_in_place(|| cluster.nodes[victim].restart());
    eventually("the killed master rejoins as a replica", || {
        let node = &cluster.nodes[victim];
        let rejoined = node.is_replica()
            && node
                .info_field("replication", "master_link_status")
                .as_deref()
                == Some("up");
        async move { rejoined.then_some(()) }
    })
    .await;
    let note = format!(
        "master {port} ({served} partitions) killed with unreplicated writes: replica promoted \
         after {} ms, the old master a replica again after {} ms",
        promoted.as_millis(),
        killed.elapsed().as_millis()
    );
    (note, killed)
}

/// Cuts `replica`'s link to its master and keeps it cut (credentials the
/// master refuses; see `failover.rs`).
fn cut_replication(replica: &RedisServer) {
    let mut conn = replica.conn();
    for (name, value) in [("masteruser", "no-such-user"), ("masterauth", "wrong")] {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", name, value][..])
            .query(&mut conn)
            .expect("CONFIG SET on the replica");
    }
    let _: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "master"][..])
        .query(&mut conn)
        .expect("CLIENT KILL TYPE master");
}

/// Gives `replica` back its empty replication credentials.
fn restore_replication(replica: &RedisServer) {
    let mut conn = replica.conn();
    for name in ["masteruser", "masterauth"] {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", name, ""][..])
            .query(&mut conn)
            .expect("CONFIG SET on the replica");
    }
}

/// The gateways' `streamgate_partitions_owned` gauges, summed.
async fn owned_by_gauges(gateways: &Gateways) -> f64 {
    let series = format!(r#"streamgate_partitions_owned{{stream="{STREAM}",group="{GROUP}"}}"#);
    let mut sum = 0.0;
    for addr in &gateways.metrics {
        sum += sample(&scrape(*addr).await, &series).unwrap_or(0.0);
    }
    sum
}

async fn run(scenario: Scenario) {
    let secs: u64 = std::env::var("STREAMGATE_ORDERED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // Every partition gets keys, so every consumer gets work.
    let covered: HashSet<u32> = (0..KEYS)
        .map(|k| partition_of(&key_name(k), PARTITIONS))
        .collect();
    assert_eq!(covered.len(), PARTITIONS as usize);
    let started = Instant::now();
    let mut backend = tokio::task::block_in_place(|| Backend::start(scenario));
    let gateways = tokio::task::block_in_place(|| Gateways::start(&backend));
    let mut admin = gateways.admin[0].clone();
    let created = admin
        .create_stream(pb::CreateStreamRequest {
            stream: STREAM.into(),
            partitions: PARTITIONS,
        })
        .await
        .expect("CreateStream");
    assert_eq!(created.into_inner().partitions, PARTITIONS);
    admin
        .create_group(pb::CreateGroupRequest {
            stream: STREAM.into(),
            group: GROUP.into(),
            start_id: "0".into(),
            mkstream: None,
        })
        .await
        .expect("CreateGroup");

    let ledger = Arc::new(Ledger::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut chaos = Chaos {
        ledger: ledger.clone(),
        gateways,
        live: BTreeMap::new(),
        pace: scenario.pace(),
        samples: Arc::new(Mutex::new(Samples::default())),
        tasks: Vec::new(),
        done: Arc::new(AtomicBool::new(false)),
        next_name: 0,
        rebalances: Vec::new(),
        failovers: Vec::new(),
        notes: Vec::new(),
    };
    chaos.tasks.push(tokio::spawn(sampler(
        chaos.gateways.admin.clone(),
        chaos.samples.clone(),
        chaos.done.clone(),
    )));
    for n in 0..FIRST_CONSUMERS {
        chaos.join(n % 2);
    }
    chaos.settle(Instant::now(), "the start").await;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|n| {
            let addrs = chaos.gateways.addrs.clone();
            tokio::spawn(producer(n, addrs, ledger.clone(), stop.clone()))
        })
        .collect();

    // The faults, one after the other, each settled, then steady traffic.
    let traffic = Instant::now();
    let mut round = 0;
    tokio::time::sleep(PACE).await;
    loop {
        for &fault in scenario.schedule() {
            chaos.fault(fault, &mut backend, round).await;
            tokio::time::sleep(PACE).await;
        }
        round += 1;
        if traffic.elapsed() >= Duration::from_secs(secs) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("a producer failed");
    }
    let traffic = traffic.elapsed();

    // The drain: every acknowledged event acked, nothing pending or unread.
    let drain = Instant::now();
    let last = loop {
        let unacked = ledger.unacked();
        let latest = chaos.samples.lock().unwrap().latest.clone();
        let partitions = latest.filter(|s| s.sent > drain).map(|s| s.partitions);
        let settled = (partitions.as_ref())
            .is_some_and(|ps| ps.iter().all(|p| p.pending == 0 && p.lag.unwrap_or(0) == 0));
        if unacked == 0 && settled {
            break None;
        }
        if drain.elapsed() > DRAIN_DEADLINE {
            break Some((unacked, partitions));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained = drain.elapsed();
    chaos.settle(Instant::now(), "the drain").await;
    // Polled, as each gateway updates its gauge as it acts.
    let start = Instant::now();
    let gauges = loop {
        let sum = owned_by_gauges(&chaos.gateways).await;
        if sum == f64::from(PARTITIONS) || start.elapsed() > DEADLINE {
            break sum;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    chaos.done.store(true, Ordering::Relaxed);
    for task in &chaos.tasks {
        task.abort();
    }

    // The verdicts.
    let samples = chaos.samples.lock().unwrap();
    let stored = tokio::task::block_in_place(|| backend.stored());
    let records = ledger.lock();
    let missing: Vec<String> = (records.acknowledged.iter())
        .filter(|(event, id)| stored.get(*id) != Some(*event))
        .map(|(event, id)| format!("k{:02}/{} as {id}", event.0, event.1))
        .collect();
    let unacked: Vec<String> = (records.acknowledged.iter())
        .filter(|(event, _)| !records.maybe_acked.contains(*event))
        .map(|(event, id)| format!("k{:02}/{} as {id}", event.0, event.1))
        .collect();
    let order = records.order_violations();
    let past = records.read_past_pending();
    let max = chaos
        .rebalances
        .iter()
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    let times: Vec<String> = (chaos.rebalances.iter())
        .map(|(f, d)| format!("{} {} ms", format!("{f:?}").to_lowercase(), d.as_millis()))
        .collect();
    let failover = match chaos.failovers.iter().max() {
        Some(took) => format!(
            "; failover: even shares {} ms after the master died",
            took.as_millis()
        ),
        None => String::new(),
    };
    eprintln!(
        "ordered checker {scenario:?}: events {} ({} acknowledged, {} produce retries), keys \
         {KEYS}, partitions {PARTITIONS}, consumer sessions {} ({} cut); rebalances {}, max {} ms \
         ({}){failover}; deliveries {}, duplicates delivered {}, acks {} ({} uncertain), events \
         acked {}; order violations {}, reads past a pending entry {}, lost {} (missing {}, never \
         acked {}), stray owners {} in {} samples; {:.1} s (traffic {:.1} s, drain {:.1} s)",
        records.attempted.len(),
        records.acknowledged.len(),
        records.produce_retries,
        records.sessions.len(),
        records.cuts,
        chaos.rebalances.len(),
        max.as_millis(),
        times.join(", "),
        records.deliveries.len(),
        records.duplicates(),
        records.ops.len(),
        records.uncertain_ops(),
        records.events_acked(),
        order.len(),
        past.len(),
        missing.len() + unacked.len(),
        missing.len(),
        unacked.len(),
        samples.strays.len(),
        samples.taken,
        started.elapsed().as_secs_f64(),
        traffic.as_secs_f64(),
        drained.as_secs_f64(),
    );
    for note in &chaos.notes {
        eprintln!("ordered checker {scenario:?}: {note}");
    }
    let show = |list: &[String]| {
        list.iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    };
    assert!(
        records.anomalies.is_empty(),
        "protocol anomalies:\n  {}",
        show(&records.anomalies)
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events are not in the stream under their IDs:\n  {}",
        missing.len(),
        show(&missing)
    );
    assert!(
        unacked.is_empty(),
        "{} acknowledged events were never acked; last seen (unacked, partitions): {last:?}\n  {}",
        unacked.len(),
        show(&unacked)
    );
    assert!(
        last.is_none(),
        "the stream was not drained within {DRAIN_DEADLINE:?}: (unacked, partitions) {last:?}"
    );
    assert!(
        order.is_empty(),
        "{} events first acked before an earlier event of their key:\n  {}",
        order.len(),
        show(&order)
    );
    assert!(
        past.is_empty(),
        "{} deliveries passed an earlier entry pending elsewhere:\n  {}",
        past.len(),
        show(&past)
    );
    assert!(
        samples.strays.is_empty(),
        "owners that are no consumer:\n  {}",
        show(&samples.strays)
    );
    assert_eq!(
        gauges,
        f64::from(PARTITIONS),
        "the gateways' streamgate_partitions_owned add up to the partitions"
    );
    assert!(
        records.acknowledged.len() > 100,
        "too little traffic to check anything"
    );
    if scenario.schedule().contains(&Fault::Cut) {
        assert!(
            records.duplicates() > 0,
            "a cut stream's entries come again: the checker sees duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_chaos_standalone() {
    run(Scenario::Standalone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_chaos_cluster() {
    run(Scenario::Cluster).await;
}

/// Consumers that work partition by partition, a chunk at a time, while
/// consumers join and leave again at once: a consumer that loses a partition and takes it back while it
/// still processes entries of it acks them after the partition came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_chaos_flapping() {
    run(Scenario::Flapping).await;
}

// ---------------------------------------------------------------------
// A reproduction.
// ---------------------------------------------------------------------

/// Partition of `key` among `partitions` (FNV-1a, 32 bits).
fn partition_of(key: &str, partitions: u32) -> u32 {
    let hash = key.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    hash % partitions
}

/// A bare Consume session.
struct Session {
    requests: mpsc::Sender<ConsumeRequest>,
    responses: tonic::Streaming<pb::ConsumeResponse>,
}

impl Session {
    async fn open(gw: &TestGateway, consumer: &str) -> Session {
        let (requests, rx) = mpsc::channel(16);
        let open = pb::SubscribeRequest {
            ordered: true,
            batch_size: 100,
            ..crate::common::sub(STREAM, GROUP, consumer)
        };
        let kind = Some(consume_request::Kind::Open(open));
        requests.send(ConsumeRequest { kind }).await.unwrap();
        let responses = (gw.events.clone())
            .consume(ReceiverStream::new(rx))
            .await
            .expect("Consume")
            .into_inner();
        Session {
            requests,
            responses,
        }
    }

    async fn next(&mut self) -> consume_response::Kind {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.responses.message())
                .await
                .expect("a message within the deadline")
                .expect("the stream goes on")
                .expect("the stream goes on");
            match message.kind {
                Some(consume_response::Kind::Heartbeat(_)) | None => continue,
                Some(kind) => return kind,
            }
        }
    }

    async fn entries(&mut self, n: usize) -> Vec<pb::Entry> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next().await {
                consume_response::Kind::Batch(batch) => out.extend(batch.entries),
                other => panic!("expected a batch, got {other:?}"),
            }
        }
        out
    }

    /// Acks `id` in band; answers whether it took effect. Batches that
    /// arrive meanwhile are left unread.
    async fn ack(&mut self, id: &str) -> bool {
        let ids = vec![id.to_owned()];
        let kind = Some(consume_request::Kind::Ack(pb::AckIds { ids }));
        self.requests.send(ConsumeRequest { kind }).await.unwrap();
        loop {
            if let consume_response::Kind::Confirm(confirm) = self.next().await {
                return confirm.done.iter().any(|d| d == id);
            }
        }
    }
}

/// The owners of the partitions, once they are `want`.
async fn await_owners(gw: &TestGateway, want: &[&str]) {
    eventually(&format!("owners {want:?}"), || {
        let mut admin = gw.admin.clone();
        async move {
            let partitions = admin
                .list_partitions(pb::ListPartitionsRequest {
                    stream: STREAM.into(),
                    group: GROUP.into(),
                })
                .await
                .ok()?
                .into_inner()
                .partitions;
            (partitions
                .iter()
                .map(|p| p.owner.as_str())
                .eq(want.iter().copied()))
            .then_some(())
        }
    })
    .await;
}

/// A consumer receives events 0 and 1 of a key; its partition is given to
/// a newcomer before it acks them, so its ack of event 0 does not take
/// effect (not pending: it no longer owns the partition); the newcomer
/// leaves without acking, the partition comes back to the first consumer,
/// and it acks event 1, the next one in the order it received them. That
/// ack must not take effect while event 0 is still pending, or the key's
/// first acks would be 1 before 0 although the consumer acked in the
/// order it received: the lease alone does not tell the acquisition the
/// entries were delivered under, so acks take effect in ID order only.
#[tokio::test]
async fn an_ack_from_before_a_partition_was_lost_and_taken_back_does_not_take_effect() {
    let redis = RedisServer::start();
    let mut gw = TestGateway::start(Settings {
        rebalance_interval_ms: 50,
        partition_lease_ms: 1500,
        heartbeat_ms: 0,
        ..config(&redis)
    })
    .await;
    gw.admin
        .create_stream(pb::CreateStreamRequest {
            stream: STREAM.into(),
            partitions: 2,
        })
        .await
        .expect("CreateStream");
    let mut a = Session::open(&gw, "a").await;
    await_owners(&gw, &["a", "a"]).await;
    // A key in partition 1: the one `a` gives up when `b` joins.
    let key = (0..)
        .map(|n| format!("k{n}"))
        .find(|k| partition_of(k, 2) == 1)
        .unwrap();
    let events = (0..2)
        .map(|seq| pb::Event {
            key: key.clone(),
            ..event("order.paid", &[("seq", &seq.to_string())])
        })
        .collect();
    crate::common::produce(&mut gw, STREAM, events).await;
    let got = a.entries(2).await;
    assert!(got.iter().all(|e| e.partition == 1), "{got:?}");

    let b = subscribe(
        &mut gw,
        pb::SubscribeRequest {
            ordered: true,
            ..crate::common::sub(STREAM, GROUP, "b")
        },
    )
    .await;
    await_owners(&gw, &["a", "b"]).await;
    assert!(
        !a.ack(&got[0].id).await,
        "a no longer owns partition 1: its ack of event 0 does not take effect"
    );
    drop(b);
    await_owners(&gw, &["a", "a"]).await;
    let took_effect = a.ack(&got[1].id).await;
    let (_, first) = got[0].id.split_once('/').unwrap();
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(&[&format!("{STREAM}{{1"), GROUP, first, first, "1"][..])
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(pending.len(), 1, "event 0 is still pending");
    assert!(
        !took_effect,
        "event 1 of {key} was acked while event 0 is still pending: the key's first acks \
         come out of order although the consumer acked in the order it received"
    );
}
