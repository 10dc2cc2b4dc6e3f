//! The loss checker: producers and two consumer groups run against a real
//! gateway process and Redis while faults are injected; at the end every
//! ID whose Produce was acknowledged must have been acknowledged by every
//! group. Reports lost (must be 0), duplicates and throughput.
//!
//! Each scenario runs for `STREAMGATE_LOSS_SECS` seconds (default 3); run
//! a long mode by hand with e.g.
//! `STREAMGATE_LOSS_SECS=120 cargo test --test integration loss -- --nocapture`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamgate::pb::{self, event_stream_client::EventStreamClient, subscribe_response::Kind};
use tonic::transport::{Channel, Endpoint};

use crate::common::{GatewayProcess, RedisServer, event, free_port};

const GROUPS: [&str; 2] = ["notifications", "analytics"];
const CONSUMERS: usize = 3;
const PRODUCERS: usize = 3;
/// Reclaim threshold of the consumers.
const MIN_IDLE_MS: u64 = 600;

/// What goes wrong during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Redis SIGKILLed and restarted (AOF, appendfsync always), repeatedly.
    RedisKill,
    /// The gateway SIGKILLed and restarted, repeatedly.
    GatewayKill,
    /// Consumers drop their stream mid-batch now and then, without acking.
    CutStreams,
    /// One consumer stops reading for longer than the reclaim threshold.
    FrozenConsumer,
}

/// Shared bookkeeping of one run.
#[derive(Default)]
struct Ledger {
    produced: Mutex<HashSet<String>>,
    /// Per group: deliveries per ID.
    delivered: Mutex<HashMap<&'static str, HashMap<String, u32>>>,
    /// Per group: IDs whose Ack call succeeded.
    acked: Mutex<HashMap<&'static str, HashSet<String>>>,
    produce_calls: AtomicU64,
}

impl Ledger {
    fn lost(&self, group: &str) -> usize {
        let produced = self.produced.lock().unwrap();
        let acked = self.acked.lock().unwrap();
        let empty = HashSet::new();
        let acked = acked.get(group).unwrap_or(&empty);
        produced.iter().filter(|id| !acked.contains(*id)).count()
    }

    fn duplicates(&self) -> u64 {
        let delivered = self.delivered.lock().unwrap();
        delivered
            .values()
            .flat_map(|m| m.values())
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }
}

fn lazy_client(addr: &str) -> EventStreamClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    EventStreamClient::new(channel)
}

/// Produces batches of 10 until `stop`, retrying a failed batch with the
/// same idempotency keys so a retry never writes twice.
async fn producer(addr: String, n: usize, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut client = lazy_client(&addr);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let events: Vec<pb::Event> = (0..10)
            .map(|i| pb::Event {
                idempotency_key: format!("p{n}-{seq}-{i}"),
                ..event("order.placed", &[("order_id", &format!("o-{n}-{seq}-{i}"))])
            })
            .collect();
        seq += 1;
        loop {
            let request = pb::ProduceRequest {
                stream: "orders".into(),
                events: events.clone(),
                ..Default::default()
            };
            ledger.produce_calls.fetch_add(1, Ordering::Relaxed);
            match client.produce(request).await {
                Ok(r) => {
                    ledger.produced.lock().unwrap().extend(r.into_inner().ids);
                    break;
                }
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// One group member: subscribes with reclaim, records and acks every batch,
/// reconnects whenever its stream ends.
async fn consumer(
    addr: String,
    group: &'static str,
    n: usize,
    fault: Fault,
    ledger: Arc<Ledger>,
    done: Arc<AtomicBool>,
) {
    let mut client = lazy_client(&addr);
    let mut frozen_once = false;
    let mut rng = fastrand::Rng::with_seed(n as u64 * 7 + group.len() as u64);
    while !done.load(Ordering::Relaxed) {
        let request = pb::SubscribeRequest {
            stream: "orders".into(),
            group: group.into(),
            consumer: format!("{group}-{n}"),
            batch_size: 20,
            create_group: true,
            group_start_id: "0".into(),
            pending_first: true,
            reclaim: Some(pb::Reclaim {
                min_idle_ms: MIN_IDLE_MS,
                interval_ms: 200,
            }),
            heartbeat_ms: Some(200),
            ..Default::default()
        };
        let Ok(response) = client.subscribe(request).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = response.into_inner();
        loop {
            if done.load(Ordering::Relaxed) {
                return;
            }
            let Ok(Some(message)) = stream.message().await else {
                break;
            };
            let Some(Kind::Batch(batch)) = message.kind else {
                continue;
            };
            let ids: Vec<String> = batch.entries.into_iter().map(|e| e.id).collect();
            {
                let mut delivered = ledger.delivered.lock().unwrap();
                let counts = delivered.entry(group).or_default();
                for id in &ids {
                    *counts.entry(id.clone()).or_default() += 1;
                }
            }
            if fault == Fault::CutStreams && rng.u8(..) < 40 {
                break; // cut mid-batch: never acked, must come back
            }
            if fault == Fault::FrozenConsumer && group == GROUPS[0] && n == 0 && !frozen_once {
                frozen_once = true;
                // Hold the entries, read nothing, well past the threshold.
                tokio::time::sleep(Duration::from_millis(3 * MIN_IDLE_MS)).await;
            }
            // An Ack whose answer was lost (gateway or Redis killed) may
            // have been applied or not: retry until one answers, as a real
            // client must. XACK is idempotent.
            let ack = pb::AckRequest {
                stream: "orders".into(),
                group: group.into(),
                ids: ids.clone(),
            };
            while client.ack(ack.clone()).await.is_err() {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ledger
                .acked
                .lock()
                .unwrap()
                .entry(group)
                .or_default()
                .extend(ids);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one scenario and returns (produced, duplicates, throughput/s).
async fn run(fault: Fault) -> (usize, u64, f64) {
    let secs: u64 = std::env::var("STREAMGATE_LOSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut gateway = GatewayProcess::start(
        &redis.url(),
        &listen,
        &[
            "--redis-outage-grace-ms",
            "30000",
            // No retention cap: trimming entries no group has read yet is
            // retention doing its job (see safe trim), not loss.
            "--max-len",
            "0",
        ],
    );
    let addr = gateway.addr.clone();

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for group in GROUPS {
        for n in 0..CONSUMERS {
            tasks.push(tokio::spawn(consumer(
                addr.clone(),
                group,
                n,
                fault,
                ledger.clone(),
                done.clone(),
            )));
        }
    }
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|n| tokio::spawn(producer(addr.clone(), n, ledger.clone(), stop.clone())))
        .collect();

    let start = Instant::now();
    let run_for = Duration::from_secs(secs);
    let mut next_fault = start + run_for / 4;
    while start.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if Instant::now() >= next_fault {
            match fault {
                Fault::RedisKill => tokio::task::block_in_place(|| redis.restart()),
                Fault::GatewayKill => tokio::task::block_in_place(|| gateway.restart()),
                Fault::CutStreams | Fault::FrozenConsumer => {}
            }
            next_fault += run_for / 4;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Every acknowledged ID must end up acked by every group.
    let deadline = Instant::now() + Duration::from_secs(60);
    while GROUPS.iter().any(|g| ledger.lost(g) > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let produced = ledger.produced.lock().unwrap().len();
    let duplicates = ledger.duplicates();
    let throughput = produced as f64 / elapsed;
    for group in GROUPS {
        let lost = ledger.lost(group);
        eprintln!(
            "loss checker {fault:?}: group {group}: produced {produced}, lost {lost}, duplicates (all groups) {duplicates}, \
             {throughput:.0} entries/s over {elapsed:.1} s, {} produce calls",
            ledger.produce_calls.load(Ordering::Relaxed)
        );
        if lost > 0 {
            let produced = ledger.produced.lock().unwrap().clone();
            let acked = ledger
                .acked
                .lock()
                .unwrap()
                .get(group)
                .cloned()
                .unwrap_or_default();
            let delivered = ledger
                .delivered
                .lock()
                .unwrap()
                .get(group)
                .cloned()
                .unwrap_or_default();
            let mut conn = redis.conn();
            for id in produced.iter().filter(|id| !acked.contains(*id)).take(8) {
                let pel: redis::Value = redis::cmd("XPENDING")
                    .arg("orders")
                    .arg(group)
                    .arg(id)
                    .arg(id)
                    .arg(1)
                    .query(&mut conn)
                    .unwrap();
                let exists: redis::Value = redis::cmd("XRANGE")
                    .arg("orders")
                    .arg(id)
                    .arg(id)
                    .query(&mut conn)
                    .unwrap();
                eprintln!(
                    "lost {id}: delivered {:?} pel {pel:?} exists {exists:?}",
                    delivered.get(id)
                );
            }
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg("orders")
                .query(&mut conn)
                .unwrap();
            eprintln!("groups {groups:?}");
        }
        assert_eq!(
            lost, 0,
            "{fault:?}: group {group} lost {lost} of {produced} acknowledged entries"
        );
    }
    assert!(produced > 0, "{fault:?}: nothing was produced");
    drop(gateway);
    (produced, duplicates, throughput)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_redis_killed_and_restarted() {
    run(Fault::RedisKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_gateway_killed_and_restarted() {
    run(Fault::GatewayKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_client_streams_cut_mid_batch() {
    let (_, duplicates, _) = run(Fault::CutStreams).await;
    assert!(
        duplicates > 0,
        "cut batches come back: the checker sees duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_consumer_frozen_past_the_reclaim_threshold() {
    run(Fault::FrozenConsumer).await;
}
