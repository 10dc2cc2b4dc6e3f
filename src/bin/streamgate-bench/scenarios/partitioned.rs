//! S8 partition-spread (issue 22): S1's produce work on the 3-master
//! cluster, through the gateway, to one plain stream and to a stream of
//! [`PARTITIONS`] partitions (`StreamAdmin.CreateStream`), and the same
//! work directly: XADDs to one key, and to the partition keys, each event
//! to the partition the gateway would pick. Every event carries
//! `Event.key` (`k<seq>`, a different key per event), so a batch spreads
//! over the partitions, and the partitions over the masters.
//!
//! Sides, back to back: gateway on the plain stream, gateway on the
//! partitioned one, direct on one key, direct on the partition keys. The
//! report's `gateway` and `direct` are the partitioned sides (their ratio
//! and S1's target), `plain_stream` the plain ones and the quotients
//! partitioned / plain. Each partitioned side reports the XADDs each master
//! ran (`xadds_per_master`, from `INFO commandstats`) and how many of its
//! partition keys each master holds (`partitions_per_master`, from the
//! slot map): the spread, which is what carries over to a machine with a
//! core per master. The direct side's stream name is chosen so that its
//! partition keys fall on the masters as the gateway's do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use serde_json::json;
use streamgate::pb;
use streamgate::pb::stream_admin_client::StreamAdminClient;
use tokio::task::JoinSet;

use super::produce::{Shape, closed_loop, merge, produce_through_gateway, spread};
use super::{Ctx, SideKind, join_all};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::payload;
use crate::report::{Report, Target};
use crate::rig::topology;
use crate::stats::Side;

/// Partitions of the partitioned stream.
pub const PARTITIONS: u32 = 12;

/// S1's shape: 4 clients, one Produce of 100 events in flight each.
const SHAPE: Shape = Shape {
    id: ScenarioId::S8,
    name: "partition-spread",
    channels: 4,
    tasks: 4,
    batch: 100,
    streams: 1,
    target_ratio: 0.7,
};

/// Most candidate names tried for the direct side's partitioned stream
/// before settling for one whose keys fall otherwise than the gateway's.
const NAME_CANDIDATES: usize = 10_000;

/// Runs S8's four sides and reports them.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let plain = ctx
        .streams(ScenarioId::S8, SideKind::Gateway, 1)
        .await?
        .remove(0);
    let plain_direct = ctx
        .streams(ScenarioId::S8, SideKind::Direct, 1)
        .await?
        .remove(0);
    let wide = wide_name(SideKind::Gateway, 0);
    let wide_keys: Vec<String> = (0..PARTITIONS)
        .map(|p| ctx.rig.gateway_key(&partition(&wide, p)))
        .collect();
    let layout = partitions_per_master(ctx, &wide_keys).await?;
    let mut direct_keys = Vec::new();
    for n in 0..NAME_CANDIDATES {
        let name = wide_name(SideKind::Direct, n);
        let keys: Vec<String> = (0..PARTITIONS).map(|p| partition(&name, p)).collect();
        let found = partitions_per_master(ctx, &keys).await? == layout;
        if found || direct_keys.is_empty() {
            direct_keys = keys;
        }
        if found {
            break;
        }
    }
    let direct_layout = partitions_per_master(ctx, &direct_keys).await?;

    let gateway_plain = gateway_side(ctx, &plain, vec![ctx.rig.gateway_key(&plain)]).await?;
    let created = StreamAdminClient::new(ctx.rig.channel().await?)
        .create_stream(pb::CreateStreamRequest {
            stream: wide.clone(),
            partitions: PARTITIONS,
        })
        .await?
        .into_inner();
    if created.partitions != PARTITIONS {
        return Err(format!(
            "CreateStream {wide:?}: {} partitions, not {PARTITIONS}",
            created.partitions
        )
        .into());
    }
    let mut clean = wide_keys.clone();
    clean.push(ctx.rig.gateway_key(&wide));
    let gateway_wide = gateway_side(ctx, &wide, clean)
        .await?
        .with("partitions_per_master", layout.clone());
    let direct_plain = direct_side(ctx, vec![plain_direct]).await?;
    let direct_wide = direct_side(ctx, direct_keys.clone())
        .await?
        .with("partitions_per_master", direct_layout);

    let params = json!({
        "redis": ctx.rig.storage,
        "partitions": PARTITIONS,
        "gateway_stream": wide,
        "direct_keys": direct_keys,
        "clients": SHAPE.channels,
        "in_flight": SHAPE.tasks,
        "events_per_call": SHAPE.batch,
        "event_keys": "Event.key k<seq>, seq counting the caller's events; partition fnv1a32(key) mod 12",
        "max_len": ctx.rig.max_len,
        "max_len_applies": "per partition (per key on the direct side)",
        "secs_per_side": ctx.plan.produce_for.as_secs_f64(),
        "direct": "one shared cluster client; a batch is one pipeline per partition it touches, sent concurrently",
    });
    let mut report = Report::new(
        SHAPE.id.as_str(),
        SHAPE.name,
        "events/s",
        "one Produce call / one batch's XADD pipelines (one per partition, concurrent) round trip",
        "throughput",
        gateway_wide,
        direct_wide,
        params,
    )
    .plain_stream(
        &format!("{}, one plain stream", ctx.rig.storage),
        gateway_plain,
        direct_plain,
    );
    report.wakeup = ctx.row().wakeup;
    report.gateway_label = Some(format!("gateway, {PARTITIONS} parts"));
    let ratio = report.ratio;
    Ok(report.target(Target::at_least(
        &format!("gateway/direct throughput on {PARTITIONS} partitions (S1's)"),
        ratio,
        SHAPE.target_ratio,
    )))
}

/// The partitioned stream's name on `side`; `n` > 0 for another candidate.
fn wide_name(side: SideKind, n: usize) -> String {
    let side = match side {
        SideKind::Gateway => "gw",
        SideKind::Direct => "direct",
    };
    let pid = std::process::id();
    match n {
        0 => format!("sgbench:{pid}:S8:{side}:wide"),
        n => format!("sgbench:{pid}:S8:{side}:wide-{n}"),
    }
}

/// Partition `p` of stream `stream`, as the gateway names it
/// (docs/partitions.md): `stream{p`, a key without hash tag.
fn partition(stream: &str, p: u32) -> String {
    format!("{stream}{{{p}")
}

/// How many of `keys` each master holds, masters in slot order (as
/// `xadds_per_master`); one count on one Redis.
async fn partitions_per_master(ctx: &Ctx<'_>, keys: &[String]) -> Fallible<Vec<u64>> {
    let ranges = ctx.rig.slot_ranges().await?;
    let masters = topology::masters(ranges);
    if masters.is_empty() {
        return Ok(vec![keys.len() as u64]);
    }
    let mut counts = vec![0; masters.len()];
    for key in keys {
        let slot = topology::slot_of(key.as_bytes());
        let master = topology::master_of(ranges, slot)
            .ok_or_else(|| format!("slot {slot} has no master"))?;
        if let Some(i) = masters.iter().position(|m| m == master) {
            counts[i] += 1;
        }
    }
    Ok(counts)
}

/// S1's gateway side on one stream (plain or partitioned: the client does
/// not tell them apart), with keyed events; deletes `clean` afterwards.
async fn gateway_side(ctx: &Ctx<'_>, stream: &str, clean: Vec<String>) -> Fallible<Side> {
    let streams = [stream.to_owned()];
    let side = produce_through_gateway(ctx, SHAPE, &streams, payload::keyed_event).await?;
    ctx.clean_up(&clean).await?;
    Ok(side)
}

/// S1's direct side with keyed events: on one key, or on the partition
/// keys `keys` (partition `p` = `keys[p]`), each batch as one pipeline per
/// partition it touches, sent concurrently, as the gateway writes a
/// request.
async fn direct_side(ctx: &Ctx<'_>, keys: Vec<String>) -> Fallible<Side> {
    let conn = ctx.rig.direct(Duration::ZERO).await?;
    let cap = Some(ctx.rig.max_len);
    let shared = Arc::new(keys.clone());
    let xadds = ctx.rig.xadds_per_master().await?;
    let cpu = ctx.rig.cpu().await;
    let start = Instant::now();
    let deadline = start + ctx.plan.produce_for;
    let mut tasks = JoinSet::new();
    for _ in 0..SHAPE.tasks {
        let conn = conn.clone();
        let keys = shared.clone();
        tasks.spawn(async move {
            closed_loop(deadline, SHAPE.batch, |seq| {
                let conn = conn.clone();
                let keys = keys.clone();
                async move {
                    let partitions = u32::try_from(keys.len()).unwrap_or(1);
                    let mut pipes: Vec<(redis::Pipeline, usize)> =
                        keys.iter().map(|_| (redis::pipe(), 0)).collect();
                    for s in seq..seq + SHAPE.batch {
                        let p = match partitions {
                            1 => 0,
                            n => payload::partition_of(&payload::partition_key(s), n) as usize,
                        };
                        pipes[p]
                            .0
                            .add_command(payload::keyed_xadd(&keys[p], cap, s));
                        pipes[p].1 += 1;
                    }
                    let written =
                        try_join_all(pipes.iter().filter(|(_, n)| *n > 0).map(|(pipe, _)| {
                            let mut conn = conn.clone();
                            async move {
                                let ids: Vec<String> = pipe.query_async(&mut conn).await?;
                                Ok::<_, redis::RedisError>(ids.len() as u64)
                            }
                        }))
                        .await?;
                    Ok(written.iter().sum())
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
