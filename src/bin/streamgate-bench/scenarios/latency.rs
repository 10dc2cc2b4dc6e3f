//! S4 latency, and the engine S5 reuses: events produced one per call at a
//! fixed total rate to a set of streams, each stream with one subscriber;
//! the figure is produce-to-receive latency, from the send instant each
//! event carries (see [`crate::payload`]).
//!
//! The producer is open-loop: every tick starts a send without waiting for
//! the previous reply, so a slow reply cannot slow the schedule and hide
//! its own delay (coordinated omission). Before the clock starts, one
//! warm-up event per stream proves every subscriber is live; entries sent
//! before the clock started are not recorded.
//!
//! Gateway side: one Subscribe per stream (batch size 10), the producer on
//! a client connection of its own. Direct side: the producer XADDs on a
//! shared multiplexed connection; readers loop `XREADGROUP COUNT 10 BLOCK
//! 1000` on connections of their own, each over `streams_per_reader`
//! streams at once. On a cluster (C5) one blocking read may only name keys
//! of one slot, so the direct side's streams are named with a hash tag
//! per reader (`{<reader's name>}:<i>`: every stream of a reader in one
//! slot, the readers spread over the masters), and each reader holds a
//! connection to its slot's master: the best layout a client that
//! chooses its own key names can have. The gateway side's streams have
//! names of their own, as users' streams do, one slot each.
//!
//! S5 and C5 also measure an idle window after the warm-up: nothing is
//! produced, and Redis' command rate (from `INFO commandstats` on every
//! master, without the bench's own readings) shows what keeping the
//! subscriptions open costs Redis.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use serde_json::json;
use streamgate::pb::{self, subscribe_response::Kind};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::{Ctx, SideKind, join_all};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::payload;
use crate::report::{GatewayRow, Report, Target};
use crate::rig::{Conn, Usage};
use crate::stats::{Latency, Side, round1, round3};

/// Subscribe / XREADGROUP batch size.
const BATCH: u32 = 10;
/// Longest blocking read, as the gateway's default `--block-ms`.
const BLOCK: Duration = Duration::from_millis(1000);
const GROUP: &str = "bench";
const CONSUMER: &str = "c";

/// The shape of a latency run.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Which scenario's streams these are.
    pub id: ScenarioId,
    /// Streams, one subscriber each.
    pub streams: usize,
    /// Gateway side: subscriptions per client connection.
    pub subs_per_channel: usize,
    /// Direct side: streams one blocking XREADGROUP watches.
    pub streams_per_reader: usize,
    /// Which streams the paced phase sends to.
    pub schedule: Schedule,
    /// Whether to measure an idle window after the warm-up.
    pub idle: bool,
}

/// Which streams the paced phase sends to, at the plan's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// For the plan's `latency_for`, each event to a stream drawn at
    /// random (S4, S5).
    Random,
    /// One event to every stream, in a random order (C5): every
    /// subscription is woken once, and each must receive its entry.
    EachStreamOnce,
}

/// Runs both sides of S4.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let spec = Spec {
        id: ScenarioId::S4,
        streams: 1,
        subs_per_channel: 1,
        streams_per_reader: 1,
        schedule: Schedule::Random,
        idle: false,
    };
    let rows = ctx
        .per_wakeup(async |ctx| Ok(gateway_side(ctx, spec).await?.0))
        .await?;
    let direct = direct_side(ctx, spec).await?;
    let params = json!({
        "rate_per_sec": ctx.plan.rate,
        "secs_per_side": ctx.plan.latency_for.as_secs_f64(),
        "subscribers": 1,
        "batch_size": BATCH,
        "direct": "XADD on a shared multiplexed connection; XREADGROUP BLOCK loop on its own connection",
    });
    let allowed = round3(direct.p99_ms + 1.0);
    let mut targets: Vec<Target> = rows
        .iter()
        .map(|(row, side)| {
            Target::at_most(
                &format!("{}: p99 ms (direct p99 + 1)", row.label),
                side.p99_ms,
                allowed,
            )
        })
        .collect();
    targets.extend(no_worse_than_xread(&rows));
    let mut report = Report::per_wakeup(
        "S4",
        "latency",
        "events/s",
        "produce to receive, per event",
        "p99_ms",
        rows,
        direct,
        params,
    );
    report.targets = targets;
    Ok(report)
}

/// How much slower than the XREAD wake-up the tracking one may be, at p50
/// and at p99, in the same run: "no worse", within this machine's noise
/// between two back-to-back runs.
const VERSUS_XREAD: f64 = 1.1;

/// With a tracking row and an xread row: tracking's p50 and p99 are no
/// worse than xread's (within [`VERSUS_XREAD`]).
pub fn no_worse_than_xread(rows: &[(GatewayRow, Side)]) -> Vec<Target> {
    let find = |name: &str| {
        rows.iter()
            .find(|(row, _)| row.wakeup == Some(name))
            .map(|(_, side)| side)
    };
    let (Some(tracking), Some(xread)) = (find("tracking"), find("xread")) else {
        return Vec::new();
    };
    vec![
        Target::at_most(
            "tracking p50 ms (xread p50 x 1.1)",
            tracking.p50_ms,
            round3(xread.p50_ms * VERSUS_XREAD),
        ),
        Target::at_most(
            "tracking p99 ms (xread p99 x 1.1)",
            tracking.p99_ms,
            round3(xread.p99_ms * VERSUS_XREAD),
        ),
    ]
}

/// Latencies of received entries, recorded only once the clock runs.
struct Recorder {
    latency: Mutex<Latency>,
    /// Send instant from which on entries count; `u64::MAX` while warming up.
    from_ns: AtomicU64,
    received: AtomicU64,
    measured: AtomicU64,
    /// Measured entries received on each stream.
    per_stream: Vec<AtomicU32>,
}

impl Recorder {
    fn new(streams: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            latency: Mutex::new(Latency::new()),
            from_ns: AtomicU64::new(u64::MAX),
            received: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            per_stream: (0..streams).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// One entry received on stream number `stream`, with the given
    /// send-instant field.
    fn observe(&self, stream: usize, sent: Option<&str>) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let Some((at, us)) = sent.and_then(payload::sent_and_elapsed_us) else {
            return;
        };
        if at >= self.from_ns.load(Ordering::Relaxed) {
            self.latency.lock().expect("latency lock").record_us(us);
            self.measured.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = self.per_stream.get(stream) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Streams that received no measured entry.
    fn streams_missing(&self) -> u64 {
        self.per_stream
            .iter()
            .filter(|n| n.load(Ordering::Relaxed) == 0)
            .count() as u64
    }

    /// Waits until `n` entries arrived in all, or `deadline` passed.
    async fn wait_received(&self, counter: &AtomicU64, n: u64, deadline: Duration) -> bool {
        let start = Instant::now();
        while counter.load(Ordering::Relaxed) < n {
            if start.elapsed() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Sends event `seq` to stream number `stream`.
type SendFn = Arc<dyn Fn(usize, u64) -> SendFuture + Send + Sync>;
type SendFuture = Pin<Box<dyn Future<Output = Fallible<()>> + Send>>;

/// The common part of both sides: warm up, measure the idle window (if
/// the spec asks), produce at the rate, drain, stop the receivers.
/// Resources are read after the warm-up, in the idle window and at the
/// end, never during the paced phase (`CLIENT LIST` is O(clients) and
/// blocks Redis meanwhile); the largest of the readings is kept.
async fn drive(
    ctx: &Ctx<'_>,
    spec: Spec,
    recorder: &Recorder,
    send: SendFn,
    receivers: JoinSet<Fallible<()>>,
    stop: CancellationToken,
) -> Fallible<(Side, Usage)> {
    let plan = ctx.plan;
    let mut warm_up = JoinSet::new();
    for stream in 0..spec.streams {
        warm_up.spawn(send(stream, stream as u64));
    }
    join_all(warm_up).await?;
    if !recorder
        .wait_received(&recorder.received, spec.streams as u64, plan.setup_deadline)
        .await
    {
        return Err(format!(
            "only {} of {} subscribers received their warm-up event within {:?}",
            recorder.received.load(Ordering::Relaxed),
            spec.streams,
            plan.setup_deadline
        )
        .into());
    }
    let mut peak = ctx.rig.usage().await?;
    let idle = if spec.idle {
        let (figures, usage) = idle_window(ctx).await?;
        peak = peak.max(usage);
        Some(figures)
    } else {
        None
    };

    let (total, order) = match spec.schedule {
        Schedule::Random => (
            u64::from(plan.rate) * plan.latency_for.as_secs().max(1),
            None,
        ),
        Schedule::EachStreamOnce => {
            let mut order: Vec<usize> = (0..spec.streams).collect();
            fastrand::shuffle(&mut order);
            (spec.streams as u64, Some(order))
        }
    };
    let planned = Duration::from_secs_f64(total as f64 / f64::from(plan.rate.max(1)));
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / plan.rate.max(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let cpu = ctx.rig.cpu().await;
    recorder.from_ns.store(payload::now_ns(), Ordering::Relaxed);
    let start = Instant::now();
    let give_up = start + planned + Duration::from_secs(1);
    let mut sends = JoinSet::new();
    let mut sent = 0;
    while sent < total && Instant::now() < give_up {
        ticks.tick().await;
        let stream = match &order {
            Some(order) => order[sent as usize],
            None if spec.streams == 1 => 0,
            None => fastrand::usize(..spec.streams),
        };
        sends.spawn(send(stream, spec.streams as u64 + sent));
        sent += 1;
        while let Some(done) = sends.try_join_next() {
            done??;
        }
    }
    let produce_time = start.elapsed();
    join_all(sends).await?;
    recorder
        .wait_received(&recorder.measured, sent, plan.drain)
        .await;
    let spent = ctx.rig.cpu().await.since(cpu);
    let at_end = ctx.rig.usage().await?;
    stop.cancel();
    join_all(receivers).await?;

    let received = recorder.measured.load(Ordering::Relaxed);
    let latency = recorder.latency.lock().expect("latency lock").clone();
    let mut side = Side::new(received, produce_time, &latency)
        .with("sent", sent)
        .with("missing", sent.saturating_sub(received))
        .cpu(spent);
    if order.is_some() {
        // Every stream was sent one event (unless the schedule fell
        // behind by more than a second: then `sent` says so).
        side = side.with("streams_missing", recorder.streams_missing());
    }
    if let Some(idle) = idle {
        side = idle.add_to(side);
    }
    Ok((side, peak.max(at_end)))
}

/// What Redis did while nothing was produced.
struct Idle {
    secs: f64,
    /// Commands per second, by command.
    by_command: BTreeMap<String, f64>,
    total_per_sec: f64,
    /// Redis' CPU over the window, in % of one core.
    redis_cpu_pct: Option<f64>,
}

impl Idle {
    fn add_to(self, side: Side) -> Side {
        let by_command: serde_json::Map<String, serde_json::Value> = self
            .by_command
            .into_iter()
            .map(|(name, rate)| (name, rate.into()))
            .collect();
        side.with("idle_secs", round3(self.secs))
            .with("idle_commands_per_sec", self.total_per_sec)
            .with("idle_commands", by_command)
            .with(
                "idle_redis_cpu_pct",
                self.redis_cpu_pct
                    .map_or(serde_json::Value::Null, |pct| round1(pct).into()),
            )
    }
}

/// The idle window: lets the subscriptions settle after the warm-up
/// (their follow-up reads), then counts the commands Redis runs while
/// nothing is produced, and reads the connections at its end.
async fn idle_window(ctx: &Ctx<'_>) -> Fallible<(Idle, Usage)> {
    tokio::time::sleep(ctx.plan.idle_settle).await;
    let cpu = ctx.rig.cpu().await;
    let before = ctx.rig.commands().await?;
    tokio::time::sleep(ctx.plan.idle_window).await;
    let after = ctx.rig.commands().await?;
    let spent = ctx.rig.cpu().await.since(cpu);
    let usage = ctx.rig.usage().await?;
    let (calls, secs) = after.since(&before);
    let rate = |n: u64| round1(n as f64 / secs.max(1e-3));
    let total_per_sec = rate(calls.values().sum());
    let by_command = calls.into_iter().map(|(name, n)| (name, rate(n))).collect();
    let redis_cpu_pct = spent
        .redis
        .map(|cpu| cpu.as_secs_f64() / secs.max(1e-3) * 100.0);
    Ok((
        Idle {
            secs,
            by_command,
            total_per_sec,
            redis_cpu_pct,
        },
        usage,
    ))
}

/// Creates the group on every key at its end (`$`), so only entries sent
/// from now on are delivered. One command per key, 500 in flight at a
/// time, so that it works on a cluster too (a pipeline there must stay on
/// one node).
async fn create_groups(ctx: &Ctx<'_>, keys: &[String]) -> Fallible<()> {
    let admin = ctx.rig.admin().await?;
    for chunk in keys.chunks(500) {
        let creates = chunk.iter().map(|key| {
            let mut admin = admin.clone();
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE")
                .arg(key)
                .arg(GROUP)
                .arg("$")
                .arg("MKSTREAM");
            async move { cmd.query_async::<()>(&mut admin).await }
        });
        futures_util::future::try_join_all(creates).await?;
    }
    Ok(())
}

/// The gateway side; also returns the gateway's peak usage.
pub async fn gateway_side(ctx: &Ctx<'_>, spec: Spec) -> Fallible<(Side, Usage)> {
    let names = ctx
        .streams(spec.id, SideKind::Gateway, spec.streams)
        .await?;
    let keys: Vec<String> = names
        .iter()
        .map(|n| ctx.key(SideKind::Gateway, n))
        .collect();
    create_groups(ctx, &keys).await?;

    let recorder = Recorder::new(spec.streams);
    let stop = CancellationToken::new();
    let mut receivers = JoinSet::new();
    let mut client = None;
    for (i, name) in names.iter().enumerate() {
        if i % spec.subs_per_channel.max(1) == 0 {
            client = Some(ctx.rig.events().await?);
        }
        let client = client.as_mut().expect("a client was opened above");
        let request = pb::SubscribeRequest {
            stream: name.clone(),
            group: GROUP.to_owned(),
            consumer: CONSUMER.to_owned(),
            batch_size: BATCH,
            create_group: false,
            ..Default::default()
        };
        let responses = client.subscribe(request).await?.into_inner();
        receivers.spawn(receive_via_gateway(
            responses,
            i,
            recorder.clone(),
            stop.clone(),
        ));
    }
    drop(client);

    let producer = ctx.rig.events().await?;
    let names = Arc::new(names);
    let max_len = Some(ctx.rig.max_len);
    let send: SendFn = Arc::new(move |stream, seq| {
        let mut producer = producer.clone();
        let request = pb::ProduceRequest {
            stream: names[stream].clone(),
            events: vec![payload::event(seq)],
            max_len,
            ..Default::default()
        };
        Box::pin(async move {
            producer.produce(request).await?;
            Ok(())
        })
    });
    let (side, usage) = drive(ctx, spec, &recorder, send, receivers, stop).await?;
    ctx.clean_up(&keys).await?;
    Ok((side.gateway_usage(&usage), usage))
}

async fn receive_via_gateway(
    mut responses: Streaming<pb::SubscribeResponse>,
    stream: usize,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> Fallible<()> {
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            message = responses.message() => message?,
        };
        match message.and_then(|m| m.kind) {
            Some(Kind::Batch(batch)) => {
                for entry in &batch.entries {
                    let sent = entry.fields.get(payload::SENT_FIELD).map(String::as_str);
                    recorder.observe(stream, sent);
                }
            }
            Some(Kind::Heartbeat(_)) => {}
            None => return Err("a subscription ended early".into()),
        }
    }
}

/// The direct side.
pub async fn direct_side(ctx: &Ctx<'_>, spec: Spec) -> Fallible<Side> {
    let per_reader = spec.streams_per_reader.max(1);
    let keys: Vec<String> = if ctx.rig.cluster {
        // A hash tag per reader: its streams share a slot, the readers
        // spread over the masters.
        let readers = ctx
            .streams(spec.id, SideKind::Direct, spec.streams.div_ceil(per_reader))
            .await?;
        (0..spec.streams)
            .map(|i| format!("{{{}}}:{}", readers[i / per_reader], i % per_reader))
            .collect()
    } else {
        (0..spec.streams)
            .map(|i| ctx.stream(spec.id, SideKind::Direct, i))
            .collect()
    };
    create_groups(ctx, &keys).await?;

    let recorder = Recorder::new(spec.streams);
    let stop = CancellationToken::new();
    let mut receivers = JoinSet::new();
    let mut readers = 0;
    for (chunk_index, chunk) in keys.chunks(per_reader).enumerate() {
        let conn = ctx.rig.direct_to_master_of(&chunk[0], BLOCK).await?;
        let indexed: Vec<(String, usize)> = chunk
            .iter()
            .enumerate()
            .map(|(j, key)| (key.clone(), chunk_index * per_reader + j))
            .collect();
        receivers.spawn(receive_directly(
            conn,
            indexed,
            recorder.clone(),
            stop.clone(),
        ));
        readers += 1;
    }

    let producer = ctx.rig.direct(Duration::ZERO).await?;
    let send_keys = Arc::new(keys.clone());
    let cap = Some(ctx.rig.max_len);
    let send: SendFn = Arc::new(move |stream, seq| {
        let mut producer = producer.clone();
        let cmd = payload::xadd(&send_keys[stream], cap, seq);
        Box::pin(async move {
            cmd.query_async::<String>(&mut producer).await?;
            Ok(())
        })
    });
    let (side, usage) = drive(ctx, spec, &recorder, send, receivers, stop).await?;
    ctx.clean_up(&keys).await?;
    Ok(side.direct_usage(&usage).with("readers", readers))
}

async fn receive_directly(
    mut conn: Conn,
    keys: Vec<(String, usize)>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> Fallible<()> {
    let index: HashMap<String, usize> = keys.iter().cloned().collect();
    let keys: Vec<String> = keys.into_iter().map(|(key, _)| key).collect();
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg(GROUP)
        .arg(CONSUMER)
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&keys);
    for _ in &keys {
        read.arg(">");
    }
    loop {
        let reply: Option<StreamReadReply> = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            reply = read.query_async(&mut conn) => reply?,
        };
        for key in reply.into_iter().flat_map(|r| r.keys) {
            let stream = index.get(&key.key).copied().unwrap_or(usize::MAX);
            for entry in key.ids {
                let sent = entry
                    .map
                    .get(payload::SENT_FIELD)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
                recorder.observe(stream, sent.as_deref());
            }
        }
    }
}
