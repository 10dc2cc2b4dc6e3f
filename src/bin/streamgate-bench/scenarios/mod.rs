//! The seven scenarios. Each runs its gateway side, cleans up, runs its
//! direct side with the same shape of work, and returns a [`Report`].

mod consume_ack;
mod fan_in;
mod latency;
mod produce;
mod produce_stream;

use std::time::Duration;

use tokio::task::JoinSet;

use crate::Fallible;
use crate::options::{Plan, ScenarioId};
use crate::report::Report;
use crate::rig::Rig;

/// Everything a scenario needs.
pub struct Ctx<'a> {
    /// Redis and gateway.
    pub rig: &'a Rig,
    /// Sizes.
    pub plan: &'a Plan,
    /// Redis connections the idle gateway holds (its shared connection),
    /// measured before the first scenario.
    pub idle_gateway_connections: u64,
}

/// Which side of a scenario a stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideKind {
    /// Through the gateway.
    Gateway,
    /// redis-rs directly.
    Direct,
}

impl Ctx<'_> {
    /// Client stream name `i` of a scenario's side. The process ID keeps
    /// runs against a shared Redis apart.
    pub fn stream(&self, scenario: ScenarioId, side: SideKind, i: usize) -> String {
        let side = match side {
            SideKind::Gateway => "gw",
            SideKind::Direct => "direct",
        };
        format!(
            "sgbench:{}:{}:{side}:{i}",
            std::process::id(),
            scenario.as_str()
        )
    }

    /// The Redis key of a stream name of `side`.
    pub fn key(&self, side: SideKind, stream: &str) -> String {
        match side {
            SideKind::Gateway => self.rig.gateway_key(stream),
            SideKind::Direct => stream.to_owned(),
        }
    }

    /// After a side: waits until the gateway has released the connections
    /// of closed subscriptions (one block period, 1 s by default), then
    /// deletes the side's keys so the next side starts from a clean Redis.
    pub async fn clean_up(&self, keys: &[String]) -> Fallible<()> {
        self.rig
            .wait_for_gateway_connections(self.idle_gateway_connections, Duration::from_secs(5))
            .await?;
        let mut admin = self.rig.admin().await?;
        for chunk in keys.chunks(500) {
            redis::cmd("DEL")
                .arg(chunk)
                .query_async::<()>(&mut admin)
                .await?;
        }
        Ok(())
    }
}

/// Runs one scenario.
pub async fn run(id: ScenarioId, ctx: &Ctx<'_>) -> Fallible<Report> {
    let mut report = match id {
        ScenarioId::S1 => produce::run(ctx, produce::Shape::BATCH).await?,
        ScenarioId::S2 => produce::run(ctx, produce::Shape::UNARY).await?,
        ScenarioId::S3 => consume_ack::run(ctx).await?,
        ScenarioId::S4 => latency::run(ctx).await?,
        ScenarioId::S5 => fan_in::run(ctx).await?,
        ScenarioId::S6 => produce::run(ctx, produce::Shape::STREAM).await?,
        ScenarioId::S7 => consume_ack::run_consume(ctx).await?,
    };
    report.rss_scope = ctx.rig.rss_scope.clone();
    Ok(report)
}

/// Joins every task of a set, failing with the first error.
pub async fn join_all<T: 'static>(mut tasks: JoinSet<Fallible<T>>) -> Fallible<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        out.push(joined??);
    }
    Ok(out)
}
