//! Command line, and the two sizes every scenario comes in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use streamgate::config::Wakeup;

/// Measures streamgate against Redis used directly: each scenario runs
/// twice, once through the gateway and once with redis-rs doing the same
/// work, and reports the ratio of the two.
///
/// By default it starts its own redis-server (no persistence, a free
/// loopback port) and the gateway in-process, so nothing else needs to be
/// running.
#[derive(Debug, Parser)]
#[command(name = "streamgate-bench", version)]
pub struct Args {
    /// Small counts so that every scenario finishes in a few seconds: a
    /// smoke test of the tool, not a measurement.
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object per scenario on stdout (the table goes to
    /// stderr).
    #[arg(long)]
    pub json: bool,

    /// Run only these scenarios (S1..S7, C1, C3, C5, C30, S8, S9; repeat the
    /// flag or separate with commas).
    #[arg(long, value_delimiter = ',', ignore_case = true)]
    pub scenario: Vec<ScenarioId>,

    /// Also run the Redis Cluster scenarios (C1, C3, C5, C30, S8) on
    /// private clusters: 3 masters + 3 replicas, and 1 master + 1 replica
    /// for C30's baseline. Needs `redis-cli` (package redis-tools).
    #[arg(long)]
    pub cluster: bool,

    /// --redis-url names the seed nodes (comma-separated) of a running
    /// Redis Cluster of three masters: the cluster scenarios run on it
    /// (C30's one-master baseline stays private), and the S scenarios,
    /// which need one Redis, do not run.
    #[arg(long, requires = "redis_url")]
    pub redis_cluster: bool,

    /// Use this Redis (loopback only) instead of starting a private
    /// redis-server (with --redis-cluster: a cluster's seed URLs).
    /// Scenario keys start with `sgbench:`; they are deleted afterwards.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Use a running gateway (loopback only) instead of starting one
    /// in-process. It must serve the Redis given by --redis-url.
    #[arg(long, requires = "redis_url")]
    pub gateway: Option<SocketAddr>,

    /// PID of the --gateway process, to report its RSS.
    #[arg(long, requires = "gateway")]
    pub gateway_pid: Option<u32>,

    /// The gateway's --key-prefix, so that the bench can arrange and clean
    /// up the gateway's keys directly.
    #[arg(long, default_value = "")]
    pub key_prefix: String,

    /// Length cap (`MAXLEN ~`) of produced streams, the same on both sides;
    /// the gateway's default.
    #[arg(long, default_value_t = 10_000)]
    pub max_len: u64,

    /// S5 and C5: number of idle subscriptions (default 10000; with
    /// --quick 50 for S5, 300 for C5).
    #[arg(long)]
    pub subs: Option<usize>,

    /// How the in-process gateway wakes idle subscriptions: `tracking`,
    /// `xread`, or `both` (the default, the same as `tracking,xread`).
    /// With two, S1, S4, S5 and C5 run their gateway side once per
    /// mechanism in the order given, restarting the gateway in between
    /// (rows `gateway (tracking)` and `gateway (xread)`), and the other
    /// scenarios run on the first. With --gateway, names the one
    /// mechanism that gateway runs (for the rows' labels only).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub wakeup: Vec<WakeupChoice>,

    /// The in-process gateway's `idle_recheck_ms` (default: the
    /// library's, 120000): how often an idle subscription re-reads with
    /// the tracking wake-up.
    #[arg(long, conflicts_with = "gateway")]
    pub idle_recheck_ms: Option<u64>,

    /// S5 and C5: how long the idle window lasts, in milliseconds, in
    /// which nothing is produced and Redis' command rate is measured
    /// (default 10000, 500 with --quick).
    #[arg(long)]
    pub idle_window_ms: Option<u64>,

    /// S5 direct side: streams each blocking XREADGROUP watches, i.e. how
    /// many streams share one "doorbell" connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub streams_per_reader: u64,

    /// The redis-server binary to start.
    #[arg(long, default_value = "/usr/bin/redis-server")]
    pub redis_server: PathBuf,
}

impl Args {
    /// The selected scenarios, in order. When none is named: the S
    /// scenarios, plus the cluster ones with `--cluster`; only the cluster
    /// ones with `--redis-cluster`.
    pub fn scenarios(&self) -> Result<Vec<ScenarioId>, String> {
        let mut chosen: Vec<ScenarioId> = if self.scenario.is_empty() {
            ScenarioId::value_variants()
                .iter()
                .copied()
                .filter(|id| {
                    if id.on_cluster() {
                        self.cluster || self.redis_cluster
                    } else {
                        !self.redis_cluster
                    }
                })
                .collect()
        } else {
            self.scenario.clone()
        };
        chosen.sort();
        chosen.dedup();
        if self.redis_cluster
            && let Some(id) = chosen.iter().find(|id| !id.on_cluster())
        {
            return Err(format!(
                "{} needs one Redis, not the cluster of --redis-cluster",
                id.as_str()
            ));
        }
        Ok(chosen)
    }

    /// The wake-up mechanisms the in-process gateway runs, in the order
    /// given (`tracking` first by default); with --gateway, the one that
    /// gateway runs if named (else none).
    pub fn wakeups(&self) -> Result<Vec<Wakeup>, String> {
        let chosen = if self.wakeup.is_empty() {
            &[WakeupChoice::Both][..]
        } else {
            &self.wakeup[..]
        };
        let mut out = Vec::new();
        for choice in chosen {
            let add: &[Wakeup] = match choice {
                WakeupChoice::Tracking => &[Wakeup::Tracking],
                WakeupChoice::Xread => &[Wakeup::Xread],
                WakeupChoice::Both => &[Wakeup::Tracking, Wakeup::Xread],
            };
            for wakeup in add {
                if !out.contains(wakeup) {
                    out.push(*wakeup);
                }
            }
        }
        if self.gateway.is_some() {
            if self.wakeup.is_empty() {
                return Ok(Vec::new());
            }
            if out.len() > 1 {
                return Err("--gateway runs one wake-up mechanism: name it with --wakeup tracking or --wakeup xread, or leave --wakeup out".into());
            }
        }
        Ok(out)
    }

    /// How big each scenario is.
    pub fn plan(&self) -> Plan {
        let mut plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        if let Some(subs) = self.subs {
            plan.fan_in_subs = subs.max(1);
            plan.cluster_fan_in_subs = subs.max(1);
        }
        if let Some(ms) = self.idle_window_ms {
            plan.idle_window = Duration::from_millis(ms);
        }
        plan.streams_per_reader = usize::try_from(self.streams_per_reader).unwrap_or(usize::MAX);
        plan
    }
}

/// The scenarios, named as in BENCHMARKS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum ScenarioId {
    /// produce-batch
    #[value(name = "S1")]
    S1,
    /// produce-unary
    #[value(name = "S2")]
    S2,
    /// consume-ack
    #[value(name = "S3")]
    S3,
    /// latency
    #[value(name = "S4")]
    S4,
    /// fan-in
    #[value(name = "S5")]
    S5,
    /// produce-stream
    #[value(name = "S6")]
    S6,
    /// consume (bidirectional, acks in band)
    #[value(name = "S7")]
    S7,
    /// S1 on a 3-master Redis Cluster
    #[value(name = "C1")]
    C1,
    /// S3 on a 3-master Redis Cluster
    #[value(name = "C3")]
    C3,
    /// Idle subscriptions on a 3-master Redis Cluster, each woken once
    #[value(name = "C5")]
    C5,
    /// S1's work over 30 streams: 3 masters against 1
    #[value(name = "C30")]
    C30,
    /// S1's work on a 12-partition stream against one plain stream, on a
    /// 3-master Redis Cluster
    #[value(name = "S8")]
    S8,
    /// Ordered against unordered consumption of a 12-partition stream by
    /// 3 Consume streams, on one Redis
    #[value(name = "S9")]
    S9,
}

impl ScenarioId {
    /// `S1`..`S7`, `C1`, `C3`, `C5`, `C30`, `S8`, `S9`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioId::S1 => "S1",
            ScenarioId::S2 => "S2",
            ScenarioId::S3 => "S3",
            ScenarioId::S4 => "S4",
            ScenarioId::S5 => "S5",
            ScenarioId::S6 => "S6",
            ScenarioId::S7 => "S7",
            ScenarioId::C1 => "C1",
            ScenarioId::C3 => "C3",
            ScenarioId::C5 => "C5",
            ScenarioId::C30 => "C30",
            ScenarioId::S8 => "S8",
            ScenarioId::S9 => "S9",
        }
    }

    /// Whether the scenario runs on Redis Cluster (the C scenarios, and
    /// S8, whose partitions are there to spread over masters) rather than
    /// one Redis.
    pub fn on_cluster(self) -> bool {
        matches!(
            self,
            ScenarioId::C1 | ScenarioId::C3 | ScenarioId::C5 | ScenarioId::C30 | ScenarioId::S8
        )
    }

    /// Whether the scenario runs its gateway side once per wake-up
    /// mechanism (with `--wakeup both`): those whose figures the
    /// mechanism may move. The others run on the first mechanism only.
    pub fn per_wakeup(self) -> bool {
        matches!(
            self,
            ScenarioId::S1 | ScenarioId::S4 | ScenarioId::S5 | ScenarioId::C5
        )
    }
}

/// `--wakeup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WakeupChoice {
    /// `CLIENT TRACKING` on one connection per Redis node.
    Tracking,
    /// Blocking XREADs over at most 100 streams each (streamgate's
    /// wake-up before tracking).
    Xread,
    /// Both, `tracking` first, where the mechanism matters.
    Both,
}

/// The name of a mechanism, as in the rows' labels and the JSON.
pub fn wakeup_name(wakeup: Wakeup) -> &'static str {
    match wakeup {
        Wakeup::Tracking => "tracking",
        Wakeup::Xread => "xread",
    }
}

/// Counts and durations of one invocation. Every loop is bounded by one of
/// these, in count and in time.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Mode name for the output.
    pub mode: &'static str,
    /// S1/S2 (and C1, C30, S8): how long each side produces.
    pub produce_for: Duration,
    /// S3 (and S7, C3, S9): entries produced beforehand, then consumed
    /// and acked.
    pub consume_entries: u64,
    /// S3 (and S7, C3, S9): give up consuming after this long.
    pub consume_deadline: Duration,
    /// S4/S5: how long each side produces at `rate`.
    pub latency_for: Duration,
    /// S4/S5: events per second, in total.
    pub rate: u32,
    /// S5: idle subscriptions (one stream each).
    pub fan_in_subs: usize,
    /// C5: idle subscriptions (one stream each), over the masters.
    pub cluster_fan_in_subs: usize,
    /// S5/C5: after the warm-up, let the subscriptions settle this long,
    /// then measure Redis' commands for `idle_window` with nothing
    /// produced.
    pub idle_settle: Duration,
    /// S5/C5: the idle window.
    pub idle_window: Duration,
    /// S5 direct side: streams per blocking read.
    pub streams_per_reader: usize,
    /// S4/S5: how long to wait for stragglers after the last send.
    pub drain: Duration,
    /// Opening subscriptions and warming them up (S9: the partitions
    /// shared out among the ordered consumers) must finish within this.
    pub setup_deadline: Duration,
}

impl Plan {
    /// The measurement documented in BENCHMARKS.md.
    pub fn full() -> Plan {
        Plan {
            mode: "full",
            produce_for: Duration::from_secs(5),
            consume_entries: 200_000,
            consume_deadline: Duration::from_secs(120),
            latency_for: Duration::from_secs(10),
            rate: 1000,
            fan_in_subs: 10_000,
            cluster_fan_in_subs: 10_000,
            idle_settle: Duration::from_secs(2),
            idle_window: Duration::from_secs(10),
            streams_per_reader: 100,
            drain: Duration::from_secs(5),
            setup_deadline: Duration::from_secs(60),
        }
    }

    /// A few seconds in all.
    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            produce_for: Duration::from_millis(500),
            consume_entries: 5_000,
            consume_deadline: Duration::from_secs(30),
            latency_for: Duration::from_secs(1),
            rate: 1000,
            fan_in_subs: 50,
            cluster_fan_in_subs: 300,
            idle_settle: Duration::from_millis(200),
            idle_window: Duration::from_millis(500),
            streams_per_reader: 100,
            drain: Duration::from_secs(3),
            setup_deadline: Duration::from_secs(20),
        }
    }
}
