//! S1 produce-batch and S2 produce-unary: closed-loop producers, each
//! waiting for its reply before it sends again, for a fixed time. C1 is
//! S1 on a Redis Cluster with its producers spread over one stream per
//! master; C30 is S1's work over 30 streams, on three masters and on one.
//!
//! S1 runs its gateway side once per wake-up mechanism. It has no
//! subscriber, so no wake-up happens: the rows show what the mechanism
//! costs producers when nobody waits (with tracking, Redis checks every
//! written key against its table of tracked keys once any connection has
//! tracking on).
//!
//! Gateway side: `channels` HTTP/2 connections (simulated clients) shared
//! round-robin by `tasks` concurrent callers of Produce, caller `t`
//! writing to stream `t % streams`. Direct side: the same callers on one
//! shared redis-rs connection (multiplexed; on a cluster, the cluster
//! client with one multiplexed connection per node), which is also what
//! the gateway uses underneath, so the ratio isolates what the gRPC hop
//! adds. A batch is a pipeline of XADDs to one stream: one round trip, as
//! in the gateway.

use std::time::{Duration, Instant};

use serde_json::json;
use streamgate::pb;
use tokio::task::JoinSet;

use super::{Ctx, SideKind, join_all};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::payload;
use crate::report::GatewayRow;
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
    /// Streams the callers are spread over (one per master on a cluster,
    /// round-robin).
    pub streams: usize,
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
        streams: 1,
        target_ratio: 0.7,
    };

    /// C1: S1 on a 3-master cluster, over one stream per master: 6
    /// clients (two per stream), 100 events per Produce.
    pub const CLUSTER_BATCH: Shape = Shape {
        id: ScenarioId::C1,
        name: "cluster-batch",
        channels: 6,
        tasks: 6,
        batch: 100,
        streams: 3,
        target_ratio: 0.7,
    };

    /// C30: S1's work over 30 streams, one caller each (10 streams per
    /// master on the 3-master cluster), over 6 client connections.
    pub const SCALE: Shape = Shape {
        id: ScenarioId::C30,
        name: "cluster-scale",
        channels: 6,
        tasks: 30,
        batch: 100,
        streams: 30,
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
        streams: 1,
        target_ratio: 0.5,
    };

    /// S2: 64 calls of one event in flight on one client connection.
    pub const UNARY: Shape = Shape {
        id: ScenarioId::S2,
        name: "produce-unary",
        channels: 1,
        tasks: 64,
        batch: 1,
        streams: 1,
        target_ratio: 0.5,
    };
}

/// Runs both sides of a produce scenario; S1's gateway side once per
/// wake-up mechanism.
pub async fn run(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Report> {
    let rows = if shape.id == ScenarioId::S6 {
        vec![(
            ctx.row(),
            super::produce_stream::gateway_side(ctx, shape).await?,
        )]
    } else if shape.id.per_wakeup() {
        ctx.per_wakeup(async |ctx| gateway_side(ctx, shape).await)
            .await?
    } else {
        vec![(ctx.row(), gateway_side(ctx, shape).await?)]
    };
    let direct = direct_side(ctx, shape).await?;
    let mut report = report(ctx, shape, rows, direct);
    let mut targets = vec![Target::at_least(
        "gateway/direct throughput",
        report.ratio,
        shape.target_ratio,
    )];
    if report.gateways.len() > 1 {
        targets = report
            .gateways
            .iter()
            .map(|row| {
                Target::at_least(
                    &format!("gateway ({})/direct throughput", row.wakeup.unwrap_or("?")),
                    row.ratio,
                    shape.target_ratio,
                )
            })
            .collect();
    }
    report.targets = targets;
    Ok(report)
}

/// Runs C30: S1's work over 30 streams through the gateway and directly,
/// on the 3-master cluster and again on the one-master cluster.
pub async fn run_scaling(ctx: &Ctx<'_>) -> Fallible<Report> {
    let shape = Shape::SCALE;
    let one = ctx
        .one_master
        .ok_or("C30 needs the one-master cluster beside the 3-master one")?;
    // Each 3-vs-1 pair back to back, so that a change in the machine's
    // load (other builds) between the pairs does not enter one quotient.
    let gateway = gateway_side(ctx, shape).await?;
    let gateway_1 = gateway_side(one, shape).await?;
    let direct = direct_side(ctx, shape).await?;
    let direct_1 = direct_side(one, shape).await?;
    let report = report(ctx, shape, vec![(ctx.row(), gateway)], direct).one_master(
        &one.rig.storage,
        gateway_1,
        direct_1,
    );
    let ratio = report.ratio;
    let relative = report
        .one_master
        .as_ref()
        .map_or(0.0, |baseline| baseline.relative_scaling);
    Ok(report
        .target(Target::at_least(
            "gateway/direct throughput on 3 masters",
            ratio,
            shape.target_ratio,
        ))
        .target(Target::at_least(
            "gateway 3-vs-1 scaling / direct 3-vs-1 scaling",
            relative,
            SCALING_KEPT,
        )))
}

/// C30's target: the gateway keeps at least this share of the speed-up
/// that three masters give a direct client on the same machine (whatever
/// that is: on two shared cores, little).
const SCALING_KEPT: f64 = 0.9;

/// The report of a produce scenario, without its targets.
fn report(ctx: &Ctx<'_>, shape: Shape, rows: Vec<(GatewayRow, Side)>, direct: Side) -> Report {
    let params = json!({
        "redis": ctx.rig.storage,
        "streams": shape.streams,
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
        "direct": if ctx.rig.cluster {
            "one shared cluster client (a multiplexed connection per node); a batch is one pipeline"
        } else {
            "one shared multiplexed connection; a batch is one pipeline"
        },
    });
    Report::per_wakeup(
        shape.id.as_str(),
        shape.name,
        "events/s",
        "one Produce call / one XADD pipeline round trip",
        "throughput",
        rows,
        direct,
        params,
    )
}

async fn gateway_side(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Side> {
    let streams = ctx
        .streams(shape.id, SideKind::Gateway, shape.streams)
        .await?;
    let side = produce_through_gateway(ctx, shape, &streams, payload::event).await?;
    let keys: Vec<String> = streams
        .iter()
        .map(|s| ctx.key(SideKind::Gateway, s))
        .collect();
    ctx.clean_up(&keys).await?;
    Ok(side)
}

/// The gateway side of S1's shape: `shape.tasks` closed loops of Produce
/// calls of `shape.batch` events made by `event`, over `shape.channels`
/// client connections, spread over `streams`; throughput, latency, CPU
/// and the XADDs per master.
pub(super) async fn produce_through_gateway(
    ctx: &Ctx<'_>,
    shape: Shape,
    streams: &[String],
    event: fn(u64) -> pb::Event,
) -> Fallible<Side> {
    let mut clients = Vec::with_capacity(shape.channels);
    for _ in 0..shape.channels {
        clients.push(ctx.rig.events().await?);
    }
    let max_len = Some(ctx.rig.max_len);
    let xadds = ctx.rig.xadds_per_master().await?;
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let deadline = start + ctx.plan.produce_for;
    let mut tasks = JoinSet::new();
    for task in 0..shape.tasks {
        let client = clients[task % clients.len()].clone();
        let stream = streams[task % streams.len()].clone();
        tasks.spawn(async move {
            closed_loop(deadline, shape.batch, |seq| {
                let request = pb::ProduceRequest {
                    stream: stream.clone(),
                    events: (seq..seq + shape.batch).map(event).collect(),
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
    let spread = spread(ctx, xadds).await?;
    drop(clients);
    Ok(spread(
        Side::new(count, elapsed, &latency)
            .gateway_usage(&usage)
            .cpu(spent),
    ))
}

async fn direct_side(ctx: &Ctx<'_>, shape: Shape) -> Fallible<Side> {
    let keys = ctx
        .streams(shape.id, SideKind::Direct, shape.streams)
        .await?;
    let conn = ctx.rig.direct(Duration::ZERO).await?;
    let cap = Some(ctx.rig.max_len);
    let xadds = ctx.rig.xadds_per_master().await?;
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let deadline = start + ctx.plan.produce_for;
    let mut tasks = JoinSet::new();
    for task in 0..shape.tasks {
        let conn = conn.clone();
        let key = keys[task % keys.len()].clone();
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
    let spread = spread(ctx, xadds).await?;
    drop(conn);
    ctx.clean_up(&keys).await?;
    Ok(spread(
        Side::new(count, elapsed, &latency)
            .direct_usage(&usage)
            .cpu(spent),
    ))
}

/// On a cluster, a function that adds to a side the XADDs each master ran
/// since `before` (`xadds_per_master`, in slot order): whether the work
/// was spread. On one Redis it adds nothing.
pub(super) async fn spread(ctx: &Ctx<'_>, before: Vec<u64>) -> Fallible<impl FnOnce(Side) -> Side> {
    let after = ctx.rig.xadds_per_master().await?;
    let counts: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let cluster = ctx.rig.cluster;
    Ok(move |side: Side| {
        if cluster {
            side.with("xadds_per_master", counts)
        } else {
            side
        }
    })
}

/// Calls `call(first_seq)` until `deadline`, one call in flight, timing
/// each; returns events written and the call latencies.
pub(super) async fn closed_loop<F, Fut>(
    deadline: Instant,
    batch: u64,
    mut call: F,
) -> Fallible<(u64, Latency)>
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
pub(super) fn merge(parts: Vec<(u64, Latency)>) -> (u64, Latency) {
    let mut total = Latency::new();
    let mut count = 0;
    for (n, latency) in parts {
        count += n;
        total.merge(&latency);
    }
    (count, total)
}
