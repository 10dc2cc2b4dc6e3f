//! S5 fan-in: many idle subscriptions on one gateway, then S4's paced
//! latency run spread over them at random.
//!
//! Each subscription has a stream of its own with its own group (one
//! consumer each): the shape of many services each following their own
//! topic, and the one where the gateway's cost per subscription shows,
//! since no two subscriptions can share a read. The target is memory and
//! Redis connections: the gateway wakes idle subscriptions through its
//! wake-up mechanism (`Settings::wakeup`), so the gateway side runs once
//! per mechanism. The direct side does what the XREAD wake-up does at
//! best: one `XREADGROUP ... BLOCK` per 100 streams
//! (`--streams-per-reader`).

use serde_json::json;

use super::Ctx;
use super::latency::{self, Spec};
use crate::Fallible;
use crate::options::ScenarioId;
use crate::report::{Report, Target};

/// Client connections to the gateway the subscriptions are spread over.
const CHANNELS: usize = 10;
/// Target: gateway memory, MB (at 10,000 subscriptions).
const MAX_RSS_MB: f64 = 300.0;
/// Target: at most one Redis connection per this many subscriptions (the
/// doorbell's shard size), plus a few for everything else.
const SUBS_PER_CONNECTION: usize = 100;
/// Target: Redis connections besides the doorbell's.
const OTHER_CONNECTIONS: usize = 5;

/// Runs both sides of S5, the gateway side once per wake-up mechanism.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let subs = ctx.plan.fan_in_subs;
    let spec = Spec {
        id: ScenarioId::S5,
        streams: subs,
        subs_per_channel: subs.div_ceil(CHANNELS),
        streams_per_reader: ctx.plan.streams_per_reader,
    };
    let rows = ctx
        .per_wakeup(async |ctx| {
            let rss_before = ctx.rig.rss_mb();
            let (side, _) = latency::gateway_side(ctx, spec).await?;
            let side = side.with("subscriptions", subs);
            Ok(match rss_before {
                Some(mb) => side.with("rss_before_mb", crate::stats::round1(mb)),
                None => side,
            })
        })
        .await?;
    let direct = latency::direct_side(ctx, spec).await?;
    let params = json!({
        "subscriptions": subs,
        "layout": "one stream, one group, one consumer per subscription",
        "client_connections": CHANNELS,
        "subs_per_client_connection": subs.div_ceil(CHANNELS),
        "rate_per_sec": ctx.plan.rate,
        "secs_per_side": ctx.plan.latency_for.as_secs_f64(),
        "streams_per_reader": ctx.plan.streams_per_reader,
        "direct": "one XREADGROUP BLOCK over streams_per_reader streams per connection; XADD on a shared connection",
    });
    let allowed = (subs.div_ceil(SUBS_PER_CONNECTION) + OTHER_CONNECTIONS) as f64;
    let mut targets = Vec::new();
    for (row, side) in &rows {
        if let Some(rss) = side.rss_mb {
            targets.push(Target::at_most(
                &format!("{}: RSS MB", row.label),
                rss,
                MAX_RSS_MB,
            ));
        }
        targets.push(Target::at_most(
            &format!("{}: Redis connections (subs/100 + 5)", row.label),
            side.redis_connections.unwrap_or(0) as f64,
            allowed,
        ));
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
