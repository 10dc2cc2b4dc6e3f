//! S1 produce-batch and S2 produce-unary: closed-loop producers, each
//! waiting for its reply before it sends again, for a fixed time.
//!
//! Gateway side: `channels` HTTP/2 connections (simulated clients) shared
//! round-robin by `tasks` concurrent callers of Produce. Direct side: the
//! same callers on one shared multiplexed redis-rs connection, which is
//! also what the gateway uses underneath, so the ratio isolates what the
//! gRPC hop adds. A batch is a pipeline of XADDs: one round trip, as in
//! the gateway.

use std::time::{Duration, Instant};

use serde_json::json;
use streamgate::pb;
use tokio::task::JoinSet;

use super::{Ctx, SideKind, join_all};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::payload;
use crate::report::{Report, Target};
use crate::stats::{Latency, Side};

/// The shape of a produce scenario.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub id: ScenarioId,
    pub name: &'static str,
    /// Gateway connections (clients).
    pub channels: usize,
    /// Concurrent callers, each with one call in flight.
    pub tasks: usize,
    /// Events per call.
    pub batch: u64,
    /// Target: at least this fraction of direct throughput.
    pub target_ratio: f64,
}

impl Shape {
    /// S1: 4 clients, 100 events per Produce.
    pub const BATCH: Shape = Shape {
        id: ScenarioId::S1,
        name: "produce-batch",
        channels: 4,
        tasks: 4,
        batch: 100,
        target_ratio: 0.7,
    };

    /// S6: 64 single-event requests in flight on one ProduceStream (its
    /// direct side is S2's: 64 single XADDs in flight).
    pub const STREAM: Shape = Shape {
        id: ScenarioId::S6,
        name: "produce-stream",
        channels: 1,
        tasks: 64,
        batch: 1,
        target_ratio: 0.5,
    };

    /// S2: 64 calls of one event in flight on one client connection.
    pub const UNARY: Shape = Shape {
        id: ScenarioId::S2,
        name: "produce-unary",
        channels: 1,
        tasks: 64,
        batch: 1,
        target_ratio: 0.5,
    };
}

/// Runs both sides of a produce scenario.
pub async fn run(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Report> {
    let gateway = if shape.id == ScenarioId::S6 {
        super::produce_stream::gateway_side(ctx, shape).await?
    } else {
        gateway_side(ctx, shape).await?
    };
    let direct = direct_side(ctx, shape).await?;
    let params = json!({
        "clients": shape.channels,
        "in_flight": shape.tasks,
        "events_per_call": shape.batch,
        "gateway_calls": if shape.id == ScenarioId::S6 {
            "requests on one ProduceStream"
        } else {
            "unary Produce calls"
        },
        "max_len": ctx.rig.max_len,
        "secs_per_side": ctx.plan.produce_for.as_secs_f64(),
        "direct": "one shared multiplexed connection; a batch is one pipeline",
    });
    let report = Report::new(
        shape.id.as_str(),
        shape.name,
        "events/s",
        "one Produce call / one XADD pipeline round trip",
        "throughput",
        gateway,
        direct,
        params,
    );
    let ratio = report.ratio;
    Ok(report.target(Target::at_least(
        "gateway/direct throughput",
        ratio,
        shape.target_ratio,
    )))
}

async fn gateway_side(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Side> {
    let stream = ctx.stream(shape.id, SideKind::Gateway, 0);
    let mut clients = Vec::with_capacity(shape.channels);
    for _ in 0..shape.channels {
        clients.push(ctx.rig.events().await?);
    }
    let max_len = Some(ctx.rig.max_len);
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let deadline = start + ctx.plan.produce_for;
    let mut tasks = JoinSet::new();
    for task in 0..shape.tasks {
        let client = clients[task % clients.len()].clone();
        let stream = stream.clone();
        tasks.spawn(async move {
            closed_loop(deadline, shape.batch, |seq| {
                let request = pb::ProduceRequest {
                    stream: stream.clone(),
                    events: (seq..seq + shape.batch).map(payload::event).collect(),
                    max_len,
                    ..Default::default()
                };
                let mut client = client.clone();
                async move {
                    let ids = client.produce(request).await?.into_inner().ids;
                    Ok(ids.len() as u64)
                }
            })
            .await
        });
    }
    let (parts, usage) = ctx.rig.while_sampling(join_all(tasks)).await?;
    let (count, latency) = merge(parts?);
    let elapsed = start.elapsed();
    let spent = ctx.rig.cpu().await.since(cpu);
    drop(clients);
    ctx.clean_up(&[ctx.key(SideKind::Gateway, &stream)]).await?;
    Ok(Side::new(count, elapsed, &latency)
        .gateway_usage(usage)
        .cpu(spent))
}

async fn direct_side(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Side> {
    let key = ctx.stream(shape.id, SideKind::Direct, 0);
    let conn = ctx.rig.direct(Duration::ZERO).await?;
    let cap = Some(ctx.rig.max_len);
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let deadline = start + ctx.plan.produce_for;
    let mut tasks = JoinSet::new();
    for _ in 0..shape.tasks {
        let conn = conn.clone();
        let key = key.clone();
        tasks.spawn(async move {
            closed_loop(deadline, shape.batch, |seq| {
                let mut conn = conn.clone();
                let key = key.clone();
                async move {
                    let ids: Vec<String> = if shape.batch == 1 {
                        vec![payload::xadd(&key, cap, seq).query_async(&mut conn).await?]
                    } else {
                        payload::xadd_pipeline(&key, cap, seq, shape.batch)
                            .query_async(&mut conn)
                            .await?
                    };
                    Ok(ids.len() as u64)
                }
            })
            .await
        });
    }
    let (parts, usage) = ctx.rig.while_sampling(join_all(tasks)).await?;
    let (count, latency) = merge(parts?);
    let elapsed = start.elapsed();
    let spent = ctx.rig.cpu().await.since(cpu);
    drop(conn);
    ctx.clean_up(&[key]).await?;
    Ok(Side::new(count, elapsed, &latency)
        .direct_usage(usage)
        .cpu(spent))
}

/// Calls `call(first_seq)` until `deadline`, one call in flight, timing
/// each; returns events written and the call latencies.
async fn closed_loop<F, Fut>(deadline: Instant, batch: u64, mut call: F) -> Fallible<(u64, Latency)>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Fallible<u64>>,
{
    let mut latency = Latency::new();
    let mut count = 0;
    while Instant::now() < deadline {
        let sent = Instant::now();
        let written = call(count).await?;
        latency.record(sent.elapsed());
        if written != batch {
            return Err(format!("{written} IDs for {batch} events").into());
        }
        count += written;
    }
    Ok((count, latency))
}

/// Sums counts and merges latencies of the callers.
fn merge(parts: Vec<(u64, Latency)>) -> (u64, Latency) {
    let mut total = Latency::new();
    let mut count = 0;
    for (n, latency) in parts {
        count += n;
        total.merge(&latency);
    }
    (count, total)
}
