//! S3 consume-ack: drain a pre-filled stream with two consumers of one
//! group, acknowledging each batch with one call before taking the next.
//! S7 consume: the same work on two Consume streams, each batch acked in
//! band (without waiting for its Confirm before taking the next batch);
//! the direct side is S3's.
//!
//! Gateway side: two clients, each with a Subscribe (batch size 100) and
//! an Ack per received batch. The gateway reads the next batch while the
//! client acks the previous one (its hand-off buffers one batch). Direct
//! side: two tasks, each on its own connection, looping `XREADGROUP COUNT
//! 100 BLOCK 1000` then `XACK`: the plain client loop that the gateway
//! replaces (it reads without BLOCK on its shared connection and waits on
//! its doorbell instead).
//! C3 is S3 on a Redis Cluster: one stream per master, each drained by
//! two consumers, the entries split evenly over the streams; its direct
//! consumers each hold a cluster client of their own.
//! Filling the stream is not timed; the clock runs from the first
//! Subscribe (or read) until every entry is acked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use serde_json::json;
use streamgate::pb::{
    self, consume_request, consume_response, event_stream_client::EventStreamClient,
    subscribe_response::Kind,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

use super::{Ctx, SideKind, join_all};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::payload;
use crate::report::{Report, Target};
use crate::rig::{Conn, Cpu, Usage};
use crate::stats::{Latency, Side};

/// Consumers in the group of each stream.
const CONSUMERS: usize = 2;
/// C3: streams, one per master.
const CLUSTER_STREAMS: usize = 3;
/// Entries per read and per Ack.
const BATCH: u32 = 100;
/// Longest blocking read, as the gateway's default `--block-ms`.
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries per pipeline when filling the stream.
const FILL_CHUNK: u64 = 1000;
const GROUP: &str = "bench";

/// Runs both sides of S3.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let gateway = gateway_side(ctx, ScenarioId::S3, 1).await?;
    let direct = direct_side(ctx, ScenarioId::S3, 1).await?;
    let params = json!({
        "entries": ctx.plan.consume_entries,
        "consumers": CONSUMERS,
        "batch_size": BATCH,
        "direct": "per consumer: own connection, XREADGROUP COUNT 100 BLOCK 1000 then XACK",
    });
    let report = Report::new(
        "S3",
        "consume-ack",
        "entries/s",
        "one consumer cycle: receive a batch, ack it",
        "throughput",
        gateway,
        direct,
        params,
    );
    let ratio = report.ratio;
    Ok(report.target(Target::at_least("gateway/direct throughput", ratio, 0.6)))
}

/// Runs both sides of C3.
pub async fn run_cluster(ctx: &Ctx<'_>) -> Fallible<Report> {
    let gateway = gateway_side(ctx, ScenarioId::C3, CLUSTER_STREAMS).await?;
    let direct = direct_side(ctx, ScenarioId::C3, CLUSTER_STREAMS).await?;
    let params = json!({
        "redis": ctx.rig.storage,
        "streams": CLUSTER_STREAMS,
        "entries": per_stream(ctx, CLUSTER_STREAMS) * CLUSTER_STREAMS as u64,
        "consumers_per_stream": CONSUMERS,
        "batch_size": BATCH,
        "direct": "per consumer: own cluster client, XREADGROUP COUNT 100 BLOCK 1000 then XACK",
    });
    let report = Report::new(
        "C3",
        "cluster-ack",
        "entries/s",
        "one consumer cycle: receive a batch, ack it",
        "throughput",
        gateway,
        direct,
        params,
    );
    let ratio = report.ratio;
    Ok(report.target(Target::at_least("gateway/direct throughput", ratio, 0.6)))
}

/// Runs both sides of S7.
pub async fn run_consume(ctx: &Ctx<'_>) -> Fallible<Report> {
    let gateway = gateway_side(ctx, ScenarioId::S7, 1).await?;
    let direct = direct_side(ctx, ScenarioId::S3, 1).await?;
    let params = json!({
        "entries": ctx.plan.consume_entries,
        "consumers": CONSUMERS,
        "batch_size": BATCH,
        "gateway": "per consumer: one Consume stream, each batch acked in band",
        "direct": "per consumer: own connection, XREADGROUP COUNT 100 BLOCK 1000 then XACK",
    });
    let report = Report::new(
        "S7",
        "consume",
        "entries/s",
        "one consumer cycle: receive a batch, send its ack",
        "throughput",
        gateway,
        direct,
        params,
    );
    let ratio = report.ratio;
    Ok(report.target(Target::at_least("gateway/direct throughput", ratio, 0.9)))
}

/// Shared progress of the consumers of one side (S9's too).
pub(super) struct Progress {
    target: u64,
    acked: AtomicU64,
    finished: OnceLock<Instant>,
    /// Cancelled once every entry is acked, or by the side when it stops.
    pub(super) done: CancellationToken,
}

impl Progress {
    pub(super) fn new(target: u64) -> Arc<Progress> {
        Arc::new(Progress {
            target,
            acked: AtomicU64::new(0),
            finished: OnceLock::new(),
            done: CancellationToken::new(),
        })
    }

    /// Counts acked entries; the one that completes the target stops the
    /// clock and every consumer.
    pub(super) fn add(&self, n: u64) {
        if self.acked.fetch_add(n, Ordering::Relaxed) + n >= self.target {
            self.finished.get_or_init(Instant::now);
            self.done.cancel();
        }
    }

    /// Waits for completion or the deadline; returns the measured time and
    /// whether every entry was acked.
    pub(super) async fn wait(&self, start: Instant, deadline: Duration) -> (Duration, bool) {
        let complete = tokio::time::timeout(deadline, self.done.cancelled())
            .await
            .is_ok();
        let end = self.finished.get().copied().unwrap_or_else(Instant::now);
        (end - start, complete)
    }
}

/// What one consumer did.
struct Consumed {
    entries: u64,
    acked: u64,
    cycles: Latency,
}

/// Summed figures of the consumers.
fn side(parts: Vec<Consumed>, elapsed: Duration, complete: bool) -> Side {
    let mut cycles = Latency::new();
    let (mut entries, mut acked) = (0, 0);
    for part in parts {
        entries += part.entries;
        acked += part.acked;
        cycles.merge(&part.cycles);
    }
    Side::new(entries, elapsed, &cycles)
        .with("acked", acked)
        .with("complete", complete)
}

/// Waits until every entry is acked (or the deadline), stops the
/// consumers, collects their figures and deletes the stream. Returns the
/// side with its CPU, and the peak usage seen meanwhile.
async fn finish(
    ctx: &Ctx<'_>,
    progress: &Progress,
    start: Instant,
    cpu: Cpu,
    tasks: JoinSet<Fallible<Consumed>>,
    keys: &[String],
) -> Fallible<(Side, Usage)> {
    let ((elapsed, complete), usage) = ctx
        .rig
        .while_sampling(progress.wait(start, ctx.plan.consume_deadline))
        .await?;
    let spent = ctx.rig.cpu().await.since(cpu);
    progress.done.cancel();
    let parts = join_all(tasks).await?;
    ctx.clean_up(keys).await?;
    Ok((side(parts, elapsed, complete).cpu(spent), usage))
}

/// Entries each of `streams` streams is filled with: the plan's count,
/// split evenly.
fn per_stream(ctx: &Ctx<'_>, streams: usize) -> u64 {
    (ctx.plan.consume_entries / streams as u64).max(1)
}

/// The gateway side of S3 and C3 (Subscribe + unary Ack) or S7 (Consume
/// with in-band acks): the same streams, consumers and clock.
async fn gateway_side(ctx: &Ctx<'_>, id: ScenarioId, streams: usize) -> Fallible<Side> {
    let names = ctx.streams(id, SideKind::Gateway, streams).await?;
    let keys: Vec<String> = names
        .iter()
        .map(|s| ctx.key(SideKind::Gateway, s))
        .collect();
    let entries = per_stream(ctx, streams);
    for key in &keys {
        fill(ctx, key, entries).await?;
    }
    let mut clients = Vec::with_capacity(CONSUMERS * streams);
    for _ in 0..CONSUMERS * streams {
        clients.push(ctx.rig.events().await?);
    }
    let progress = Progress::new(entries * streams as u64);
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let stream = names[i % streams].clone();
        let request = pb::SubscribeRequest {
            stream: stream.clone(),
            group: GROUP.to_owned(),
            consumer: format!("c{i}"),
            batch_size: BATCH,
            create_group: false,
            ..Default::default()
        };
        if id == ScenarioId::S7 {
            let (requests, rx) = mpsc::channel(16);
            let open = consume_request::Kind::Open(request);
            requests
                .send(pb::ConsumeRequest { kind: Some(open) })
                .await?;
            let responses = client.consume(ReceiverStream::new(rx)).await?.into_inner();
            tasks.spawn(consume_in_band(requests, responses, progress.clone()));
        } else {
            let responses = client.subscribe(request).await?.into_inner();
            tasks.spawn(consume_via_gateway(
                client,
                responses,
                stream,
                progress.clone(),
            ));
        }
    }
    let (side, usage) = finish(ctx, &progress, start, cpu, tasks, &keys).await?;
    Ok(side.gateway_usage(&usage))
}

async fn consume_via_gateway(
    mut client: EventStreamClient<Channel>,
    mut responses: Streaming<pb::SubscribeResponse>,
    stream: String,
    progress: Arc<Progress>,
) -> Fallible<Consumed> {
    let mut out = Consumed {
        entries: 0,
        acked: 0,
        cycles: Latency::new(),
    };
    let mut cycle = Instant::now();
    loop {
        let message = tokio::select! {
            biased;
            () = progress.done.cancelled() => break,
            message = responses.message() => message?,
        };
        let batch = match message.and_then(|m| m.kind) {
            Some(Kind::Batch(batch)) => batch,
            Some(Kind::Heartbeat(_)) => continue,
            None => break,
        };
        let ids: Vec<String> = batch.entries.into_iter().map(|e| e.id).collect();
        let n = ids.len() as u64;
        let request = pb::AckRequest {
            stream: stream.clone(),
            group: GROUP.to_owned(),
            ids,
        };
        out.acked += client.ack(request).await?.into_inner().acked;
        out.cycles.record(cycle.elapsed());
        cycle = Instant::now();
        out.entries += n;
        progress.add(n);
    }
    Ok(out)
}

/// One Consume stream: ack every batch in band, count the confirms.
async fn consume_in_band(
    requests: mpsc::Sender<pb::ConsumeRequest>,
    mut responses: Streaming<pb::ConsumeResponse>,
    progress: Arc<Progress>,
) -> Fallible<Consumed> {
    let mut out = Consumed {
        entries: 0,
        acked: 0,
        cycles: Latency::new(),
    };
    let mut cycle = Instant::now();
    loop {
        let message = tokio::select! {
            biased;
            () = progress.done.cancelled() => break,
            message = responses.message() => message?,
        };
        match message.and_then(|m| m.kind) {
            Some(consume_response::Kind::Batch(batch)) => {
                let ids: Vec<String> = batch.entries.into_iter().map(|e| e.id).collect();
                out.entries += ids.len() as u64;
                let ack = consume_request::Kind::Ack(pb::AckIds { ids });
                requests
                    .send(pb::ConsumeRequest { kind: Some(ack) })
                    .await?;
                out.cycles.record(cycle.elapsed());
                cycle = Instant::now();
            }
            Some(consume_response::Kind::Confirm(confirm)) => {
                let n = confirm.done.len() as u64;
                out.acked += n;
                progress.add(n);
            }
            Some(consume_response::Kind::Heartbeat(_)) => {}
            None => break,
        }
    }
    Ok(out)
}

/// The direct side: `CONSUMERS` per stream, each with a connection (or
/// cluster client) of its own, since each blocks in XREADGROUP.
async fn direct_side(ctx: &Ctx<'_>, id: ScenarioId, streams: usize) -> Fallible<Side> {
    let keys = ctx.streams(id, SideKind::Direct, streams).await?;
    let entries = per_stream(ctx, streams);
    for key in &keys {
        fill(ctx, key, entries).await?;
    }
    let mut conns = Vec::with_capacity(CONSUMERS * streams);
    for _ in 0..CONSUMERS * streams {
        conns.push(ctx.rig.direct(BLOCK).await?);
    }
    let progress = Progress::new(entries * streams as u64);
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        tasks.spawn(consume_directly(
            conn,
            keys[i % streams].clone(),
            format!("c{i}"),
            progress.clone(),
        ));
    }
    let (side, usage) = finish(ctx, &progress, start, cpu, tasks, &keys).await?;
    Ok(side.direct_usage(&usage))
}

async fn consume_directly(
    mut conn: Conn,
    key: String,
    consumer: String,
    progress: Arc<Progress>,
) -> Fallible<Consumed> {
    let mut out = Consumed {
        entries: 0,
        acked: 0,
        cycles: Latency::new(),
    };
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg(GROUP)
        .arg(&consumer)
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&key)
        .arg(">");
    let mut cycle = Instant::now();
    loop {
        let reply: Option<StreamReadReply> = tokio::select! {
            biased;
            () = progress.done.cancelled() => break,
            reply = read.query_async(&mut conn) => reply?,
        };
        let ids: Vec<String> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let n = ids.len() as u64;
        let acked: u64 = redis::cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        out.acked += acked;
        out.cycles.record(cycle.elapsed());
        cycle = Instant::now();
        out.entries += n;
        progress.add(n);
    }
    Ok(out)
}

/// Fills `key` with `total` entries (uncapped, untimed) and creates the
/// group at its start.
async fn fill(ctx: &Ctx<'_>, key: &str, total: u64) -> Fallible<()> {
    let mut admin = ctx.rig.admin().await?;
    let mut seq = 0;
    while seq < total {
        let n = FILL_CHUNK.min(total - seq);
        payload::xadd_pipeline(key, None, seq, n)
            .query_async::<()>(&mut admin)
            .await?;
        seq += n;
    }
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut admin)
        .await?;
    Ok(())
}
