//! The scenarios: S1..S7 and S9 on one Redis, C1, C3, C5, C30 and S8 on a
//! Redis Cluster. Each runs its gateway side, cleans up, runs its direct
//! side with the same shape of work, and returns a [`Report`]; C30 does
//! both on three masters and again on one, S8 on a partitioned stream and
//! again on a plain one. S9 has no direct side: it runs ordered consumption
//! through the gateway against unordered consumption through the gateway.
//! S1, S4, S5 and C5 run their gateway
//! side once per wake-up mechanism ([`Ctx::per_wakeup`]), the others on
//! the first one.

mod consume_ack;
mod fan_in;
mod latency;
mod ordered;
mod partitioned;
mod produce;
mod produce_stream;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use streamgate::config::Wakeup;
use streamgate::pb;
use tokio::task::JoinSet;

use crate::Fallible;
use crate::options::{Plan, ScenarioId, wakeup_name};
use crate::payload;
use crate::report::{GatewayRow, Report};
use crate::rig::{Rig, topology};

/// Everything a scenario needs.
pub struct Ctx<'a> {
    /// Redis and gateway.
    pub rig: &'a Rig,
    /// Sizes.
    pub plan: &'a Plan,
    /// Redis connections the idle gateway holds (its shared connection),
    /// measured before the first scenario and again whenever the gateway
    /// is replaced by one running another wake-up mechanism.
    pub idle_gateway_connections: AtomicU64,
    /// C30's baseline: the same work on one master, through a gateway of
    /// its own.
    pub one_master: Option<&'a Ctx<'a>>,
}

/// Which side of a scenario a stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideKind {
    /// Through the gateway.
    Gateway,
    /// redis-rs directly.
    Direct,
}

impl<'a> Ctx<'a> {
    /// Measures the idle gateway's Redis connections and prints the rig's
    /// line of the report's header.
    pub async fn new(rig: &'a Rig, plan: &'a Plan, table: &mut dyn Write) -> Fallible<Ctx<'a>> {
        let idle = idle_connections(rig).await?;
        let wakeups: Vec<&str> = rig.wakeups().iter().map(|w| wakeup_name(*w)).collect();
        let wakeup = match (wakeups.len(), rig.wakeup()) {
            (0, Some(given)) => format!(", wake-up {} (as --wakeup says)", wakeup_name(given)),
            (0, None) => String::new(),
            (1, _) => format!(", wake-up {}", wakeups[0]),
            _ => format!(
                ", wake-up {} ({} too where a scenario compares them, the gateway restarted)",
                wakeups[0],
                wakeups[1..].join(", ")
            ),
        };
        let _ = writeln!(
            table,
            "gateway {} on {} ({}){wakeup}",
            rig.gateway_addr(),
            rig.storage,
            rig.redis_url
        );
        Ok(Ctx {
            rig,
            plan,
            idle_gateway_connections: AtomicU64::new(idle),
            one_master: None,
        })
    }

    /// Makes the gateway run `wakeup` (see [`Rig::use_wakeup`]); a new
    /// gateway is warmed up and its idle connections measured.
    pub async fn use_wakeup(&self, wakeup: Wakeup) -> Fallible<()> {
        if self.rig.use_wakeup(wakeup).await? {
            eprintln!(
                "  gateway restarted with the {} wake-up, on {}",
                wakeup_name(wakeup),
                self.rig.gateway_addr()
            );
            let idle = idle_connections(self.rig).await?;
            self.idle_gateway_connections.store(idle, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs a scenario's gateway side once per wake-up mechanism of the
    /// rig (the in-process gateway replaced in between; once, on what it
    /// runs, with a --gateway), then puts the first mechanism back.
    /// Returns each side with its row's label, in the rig's order.
    pub async fn per_wakeup<T>(
        &self,
        mut side: impl AsyncFnMut(&Ctx<'a>) -> Fallible<T>,
    ) -> Fallible<Vec<(GatewayRow, T)>> {
        let wakeups = self.rig.wakeups().to_vec();
        let mut out = Vec::new();
        if wakeups.is_empty() {
            out.push((self.row(), side(self).await?));
            return Ok(out);
        }
        for &wakeup in &wakeups {
            self.use_wakeup(wakeup).await?;
            out.push((self.row(), side(self).await?));
        }
        self.use_wakeup(wakeups[0]).await?;
        Ok(out)
    }

    /// The label and mechanism of the gateway's rows now.
    pub fn row(&self) -> GatewayRow {
        GatewayRow {
            label: self.rig.gateway_label(),
            wakeup: self.rig.wakeup().map(wakeup_name),
        }
    }

    /// `count` client stream names of a scenario's side. On a cluster they
    /// are spread evenly over the masters, round-robin (name `i` lives on
    /// master `i % masters`), found by computing each candidate key's
    /// slot; on one Redis they are [`Ctx::stream`] `0..count`.
    pub async fn streams(
        &self,
        scenario: ScenarioId,
        side: SideKind,
        count: usize,
    ) -> Fallible<Vec<String>> {
        let ranges = self.rig.slot_ranges().await?;
        let masters = topology::masters(ranges);
        if masters.is_empty() {
            return Ok((0..count).map(|i| self.stream(scenario, side, i)).collect());
        }
        let per_master = count.div_ceil(masters.len());
        let mut buckets: Vec<Vec<String>> = vec![Vec::new(); masters.len()];
        for n in 0.. {
            if buckets.iter().all(|b| b.len() >= per_master) {
                break;
            }
            if n > 1_000_000 {
                return Err("no stream names found for every master".into());
            }
            let name = self.stream(scenario, side, n);
            let slot = topology::slot_of(self.key(side, &name).as_bytes());
            let master = topology::master_of(ranges, slot)
                .ok_or_else(|| format!("slot {slot} has no master"))?;
            let i = masters.iter().position(|m| m == master).unwrap_or(0);
            if buckets[i].len() < per_master {
                buckets[i].push(name);
            }
        }
        Ok((0..count)
            .map(|i| buckets[i % masters.len()][i / masters.len()].clone())
            .collect())
    }

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
    /// of closed subscriptions (one block period, 1 s by default; up to
    /// 5 s for the XREAD wake-up's lingering shards), then deletes the
    /// side's keys so the next side starts from a clean Redis. A gateway
    /// running another mechanism than the first is replaced next, which
    /// closes its connections at once: no wait then.
    pub async fn clean_up(&self, keys: &[String]) -> Fallible<()> {
        let replaced_next = matches!(
            (self.rig.wakeup(), self.rig.wakeups().first()),
            (Some(now), Some(first)) if now != *first
        );
        if !replaced_next {
            self.rig
                .wait_for_gateway_connections(
                    self.idle_gateway_connections.load(Ordering::Relaxed),
                    Duration::from_secs(5),
                )
                .await?;
        }
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

/// A cluster-mode gateway connects to the nodes on first use, so on a
/// cluster one event goes through it first (and is deleted); then the
/// Redis connections the idle gateway holds.
async fn idle_connections(rig: &Rig) -> Fallible<u64> {
    if rig.cluster {
        let stream = format!("sgbench:{}:warm-up", std::process::id());
        let request = pb::ProduceRequest {
            stream: stream.clone(),
            events: vec![payload::event(0)],
            ..Default::default()
        };
        rig.events().await?.produce(request).await?;
        redis::cmd("DEL")
            .arg(rig.gateway_key(&stream))
            .query_async::<()>(&mut rig.admin().await?)
            .await?;
    }
    Ok(rig
        .usage()
        .await
        .map_err(|e| format!("cannot reach Redis at {}: {e}", rig.redis_url))?
        .gateway_connections)
}

/// Runs one scenario; one that does not compare wake-up mechanisms runs
/// on the first.
pub async fn run(id: ScenarioId, ctx: &Ctx<'_>) -> Fallible<Report> {
    if !id.per_wakeup()
        && let Some(&first) = ctx.rig.wakeups().first()
    {
        ctx.use_wakeup(first).await?;
    }
    let mut report = match id {
        ScenarioId::S1 => produce::run(ctx, produce::Shape::BATCH).await?,
        ScenarioId::S2 => produce::run(ctx, produce::Shape::UNARY).await?,
        ScenarioId::S3 => consume_ack::run(ctx).await?,
        ScenarioId::S4 => latency::run(ctx).await?,
        ScenarioId::S5 => fan_in::run(ctx).await?,
        ScenarioId::S6 => produce::run(ctx, produce::Shape::STREAM).await?,
        ScenarioId::S7 => consume_ack::run_consume(ctx).await?,
        ScenarioId::C1 => produce::run(ctx, produce::Shape::CLUSTER_BATCH).await?,
        ScenarioId::C3 => consume_ack::run_cluster(ctx).await?,
        ScenarioId::C5 => fan_in::run_cluster(ctx).await?,
        ScenarioId::C30 => produce::run_scaling(ctx).await?,
        ScenarioId::S8 => partitioned::run(ctx).await?,
        ScenarioId::S9 => ordered::run(ctx).await?,
    };
    report.rss_scope = ctx.rig.rss_scope.clone();
    if report.gateway_label.is_none() {
        let row = ctx.row();
        report.wakeup = row.wakeup;
        report.gateway_label = Some(row.label);
    }
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
