//! Command line, and the two sizes every scenario comes in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

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

    /// Run only these scenarios (S1..S7; repeat the flag or separate with
    /// commas).
    #[arg(long, value_delimiter = ',', ignore_case = true)]
    pub scenario: Vec<ScenarioId>,

    /// Use this Redis (loopback only) instead of starting a private
    /// redis-server. Scenario keys start with `sgbench:`; they are deleted
    /// afterwards.
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

    /// S5: number of idle subscriptions (default 10000, 50 with --quick).
    #[arg(long)]
    pub subs: Option<usize>,

    /// S5 direct side: streams each blocking XREADGROUP watches, i.e. how
    /// many streams share one "doorbell" connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub streams_per_reader: u64,

    /// The redis-server binary to start.
    #[arg(long, default_value = "/usr/bin/redis-server")]
    pub redis_server: PathBuf,
}

impl Args {
    /// The selected scenarios, in order; all of them when none is named.
    pub fn scenarios(&self) -> Vec<ScenarioId> {
        let mut chosen: Vec<ScenarioId> = if self.scenario.is_empty() {
            ScenarioId::value_variants().to_vec()
        } else {
            self.scenario.clone()
        };
        chosen.sort();
        chosen.dedup();
        chosen
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
}

impl ScenarioId {
    /// `S1`..`S7`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioId::S1 => "S1",
            ScenarioId::S2 => "S2",
            ScenarioId::S3 => "S3",
            ScenarioId::S4 => "S4",
            ScenarioId::S5 => "S5",
            ScenarioId::S6 => "S6",
            ScenarioId::S7 => "S7",
        }
    }
}

/// Counts and durations of one invocation. Every loop is bounded by one of
/// these, in count and in time.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Mode name for the output.
    pub mode: &'static str,
    /// S1/S2: how long each side produces.
    pub produce_for: Duration,
    /// S3: entries produced beforehand, then consumed and acked.
    pub consume_entries: u64,
    /// S3: give up consuming after this long.
    pub consume_deadline: Duration,
    /// S4/S5: how long each side produces at `rate`.
    pub latency_for: Duration,
    /// S4/S5: events per second, in total.
    pub rate: u32,
    /// S5: idle subscriptions (one stream each).
    pub fan_in_subs: usize,
    /// S5 direct side: streams per blocking read.
    pub streams_per_reader: usize,
    /// S4/S5: how long to wait for stragglers after the last send.
    pub drain: Duration,
    /// Opening subscriptions and warming them up must finish within this.
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
            streams_per_reader: 100,
            drain: Duration::from_secs(3),
            setup_deadline: Duration::from_secs(20),
        }
    }
}
