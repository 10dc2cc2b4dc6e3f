//! S5 fan-in: many idle subscriptions on one gateway, an idle window with
//! nothing produced, then S4's paced latency run spread over them at
//! random. C5: the same subscriptions on a 3-master Redis Cluster, each
//! stream then getting exactly one event, which its subscription must
//! receive.
//!
//! Each subscription has a stream of its own with its own group (one
//! consumer each): the shape of many services each following their own
//! topic, and the one where the gateway's cost per subscription shows,
//! since no two subscriptions can share a read. The targets are memory,
//! Redis connections and the commands Redis runs while nothing happens:
//! the gateway wakes idle subscriptions through its wake-up mechanism
//! (`Settings::wakeup`), so the gateway side runs once per mechanism. The
//! direct side does what the XREAD wake-up does at best: one
//! `XREADGROUP ... BLOCK` per 100 streams (`--streams-per-reader`); on a
//! cluster over streams that share a slot through a hash tag (see
//! [`super::latency`]).

use serde_json::json;

use super::Ctx;
use super::latency::{self, Schedule, Spec};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::report::{GatewayRow, Report, Target};
use crate::stats::Side;

/// Client connections to the gateway the subscriptions are spread over.
const CHANNELS: usize = 10;
/// Target: gateway memory, MB (at 10,000 subscriptions).
const MAX_RSS_MB: f64 = 300.0;
/// Target of the XREAD wake-up: at most one Redis connection per this
/// many subscriptions (the doorbell's shard size), plus a few for
/// everything else.
const SUBS_PER_CONNECTION: usize = 100;
/// Target of the XREAD wake-up: Redis connections besides the doorbell's.
const OTHER_CONNECTIONS: usize = 5;
/// Target of the tracking wake-up on one Redis: Redis connections, at any
/// number of subscriptions.
const TRACKING_CONNECTIONS: f64 = 10.0;
/// Target of the tracking wake-up on the 3-master cluster.
const TRACKING_CLUSTER_CONNECTIONS: f64 = 20.0;
/// Target of the tracking wake-up: Redis commands per second while
/// nothing is produced (at 10,000 subscriptions).
const TRACKING_IDLE_COMMANDS: f64 = 100.0;

/// Runs both sides of S5, the gateway side once per wake-up mechanism.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let subs = ctx.plan.fan_in_subs;
    let spec = Spec {
        id: ScenarioId::S5,
        streams: subs,
        subs_per_channel: subs.div_ceil(CHANNELS),
        streams_per_reader: ctx.plan.streams_per_reader,
        schedule: Schedule::Random,
        idle: true,
    };
    let rows = gateway_rows(ctx, spec).await?;
    let direct = latency::direct_side(ctx, spec).await?;
    let params = json!({
        "subscriptions": subs,
        "layout": "one stream, one group, one consumer per subscription",
        "client_connections": CHANNELS,
        "subs_per_client_connection": subs.div_ceil(CHANNELS),
        "rate_per_sec": ctx.plan.rate,
        "secs_per_side": ctx.plan.latency_for.as_secs_f64(),
        "idle_settle_secs": ctx.plan.idle_settle.as_secs_f64(),
        "idle_window_secs": ctx.plan.idle_window.as_secs_f64(),
        "streams_per_reader": ctx.plan.streams_per_reader,
        "gateway_wakeup_timings": ctx.rig.wakeup_timings(),
        "direct": "one XREADGROUP BLOCK over streams_per_reader streams per connection; XADD on a shared connection",
    });
    let mut targets = Vec::new();
    for (row, side) in &rows {
        if let Some(rss) = side.rss_mb {
            targets.push(Target::at_most(
                &format!("{}: RSS MB", row.label),
                rss,
                MAX_RSS_MB,
            ));
        }
        let connections = side.redis_connections.unwrap_or(0) as f64;
        if row.wakeup == Some("xread") {
            let allowed = (subs.div_ceil(SUBS_PER_CONNECTION) + OTHER_CONNECTIONS) as f64;
            targets.push(Target::at_most(
                &format!("{}: Redis connections (subs/100 + 5)", row.label),
                connections,
                allowed,
            ));
        } else {
            targets.push(Target::at_most(
                &format!("{}: Redis connections", row.label),
                connections,
                TRACKING_CONNECTIONS,
            ));
            targets.push(Target::at_most(
                &format!("{}: idle Redis commands/s", row.label),
                idle_commands(side),
                TRACKING_IDLE_COMMANDS,
            ));
        }
    }
    targets.extend(latency::no_worse_than_xread(&rows));
    let mut report = Report::per_wakeup(
        "S5",
        "fan-in",
        "events/s",
        "produce to receive, per event, over all subscriptions",
        "p99_ms",
        rows,
        direct,
        params,
    );
    report.targets = targets;
    Ok(report)
}

/// Runs both sides of C5 on the 3-master cluster, the gateway side once
/// per wake-up mechanism.
pub async fn run_cluster(ctx: &Ctx<'_>) -> Fallible<Report> {
    let subs = ctx.plan.cluster_fan_in_subs;
    let spec = Spec {
        id: ScenarioId::C5,
        streams: subs,
        subs_per_channel: subs.div_ceil(CHANNELS),
        streams_per_reader: ctx.plan.streams_per_reader,
        schedule: Schedule::EachStreamOnce,
        idle: true,
    };
    let rows = gateway_rows(ctx, spec).await?;
    let direct = latency::direct_side(ctx, spec).await?;
    let params = json!({
        "redis": ctx.rig.storage,
        "subscriptions": subs,
        "streams": subs,
        "layout": "one stream, one group, one consumer per subscription; streams spread evenly over the masters",
        "client_connections": CHANNELS,
        "subs_per_client_connection": subs.div_ceil(CHANNELS),
        "events": "one per stream, in a random order",
        "rate_per_sec": ctx.plan.rate,
        "idle_settle_secs": ctx.plan.idle_settle.as_secs_f64(),
        "idle_window_secs": ctx.plan.idle_window.as_secs_f64(),
        "streams_per_reader": ctx.plan.streams_per_reader,
        "gateway_wakeup_timings": ctx.rig.wakeup_timings(),
        "direct": "streams named {tag}:i, streams_per_reader per hash tag (one slot), tags spread over the masters; one XREADGROUP BLOCK per tag on a connection to its master; XADD on a shared cluster client",
    });
    let mut targets = Vec::new();
    for (row, side) in rows.iter().map(|(row, side)| (row.label.as_str(), side)) {
        targets.push(Target::at_most(
            &format!("{row}: subscriptions that missed their entry"),
            figure(side, "streams_missing"),
            0.0,
        ));
    }
    for (row, side) in &rows {
        if row.wakeup != Some("xread") {
            targets.push(Target::at_most(
                &format!("{}: Redis connections", row.label),
                side.redis_connections.unwrap_or(0) as f64,
                TRACKING_CLUSTER_CONNECTIONS,
            ));
        }
    }
    targets.push(Target::at_most(
        "direct: subscriptions that missed their entry",
        figure(&direct, "streams_missing"),
        0.0,
    ));
    let mut report = Report::per_wakeup(
        "C5",
        "cluster-fan-in",
        "events/s",
        "produce to receive, per event, one event per subscription",
        "p99_ms",
        rows,
        direct,
        params,
    );
    report.targets = targets;
    Ok(report)
}

/// The gateway side once per wake-up mechanism, with the subscription
/// count and the RSS before the subscriptions opened.
async fn gateway_rows(ctx: &Ctx<'_>, spec: Spec) -> Fallible<Vec<(GatewayRow, Side)>> {
    ctx.per_wakeup(async |ctx| {
        let rss_before = ctx.rig.rss_mb();
        let (side, _) = latency::gateway_side(ctx, spec).await?;
        let side = side.with("subscriptions", spec.streams);
        Ok(match rss_before {
            Some(mb) => side.with("rss_before_mb", crate::stats::round1(mb)),
            None => side,
        })
    })
    .await
}

fn idle_commands(side: &Side) -> f64 {
    figure(side, "idle_commands_per_sec")
}

/// A scenario figure of a side; NaN (which meets no target) if missing.
fn figure(side: &Side, key: &str) -> f64 {
    side.extra
        .get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN)
}
