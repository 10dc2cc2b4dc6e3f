//! S5 fan-in: many idle subscriptions on one gateway, then S4's paced
//! latency run spread over them at random.
//!
//! Each subscription has a stream of its own with its own group (one
//! consumer each): the shape of many services each following their own
//! topic, and the one where the gateway's cost per subscription shows,
//! since no two subscriptions can share a read. The target is memory and
//! Redis connections: the gateway should wake idle subscriptions from a
//! few shared blocking reads (its doorbell, `src/doorbell.rs`), so the
//! direct side does exactly that: one `XREADGROUP ... BLOCK` per 100 streams
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

/// Runs both sides of S5.
pub async fn run(ctx: &Ctx<'_>) -> Fallible<Report> {
    let subs = ctx.plan.fan_in_subs;
    let spec = Spec {
        id: ScenarioId::S5,
        streams: subs,
        subs_per_channel: subs.div_ceil(CHANNELS),
        streams_per_reader: ctx.plan.streams_per_reader,
    };
    let rss_before = ctx.rig.rss_mb();
    let (gateway, usage) = latency::gateway_side(ctx, spec).await?;
    let gateway = gateway.with("subscriptions", subs);
    let gateway = match rss_before {
        Some(mb) => gateway.with("rss_before_mb", crate::stats::round1(mb)),
        None => gateway,
    };
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
    let mut report = Report::new(
        "S5",
        "fan-in",
        "events/s",
        "produce to receive, per event, over all subscriptions",
        "p99_ms",
        gateway,
        direct,
        params,
    );
    if let Some(rss) = usage.rss_mb {
        report = report.target(Target::at_most(
            "gateway RSS MB",
            crate::stats::round1(rss),
            MAX_RSS_MB,
        ));
    }
    let allowed = (subs.div_ceil(SUBS_PER_CONNECTION) + OTHER_CONNECTIONS) as f64;
    Ok(report.target(Target::at_most(
        "gateway Redis connections (subs/100 + 5)",
        usage.gateway_connections as f64,
        allowed,
    )))
}
