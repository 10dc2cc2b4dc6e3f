//! Latency histograms and the figures one side of a scenario reports.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::rig::{Cpu, Usage};

/// Latencies in microseconds, from 1 µs to 60 s at three significant
/// digits: exact enough for p999 and cheap to record into.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one duration (clamped into the histogram's range).
    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one latency given in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile in milliseconds; 0 when empty.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// What one side (gateway or direct) of a scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// Events or entries completed.
    pub count: u64,
    /// Wall time of the measured phase, in seconds.
    pub secs: f64,
    /// `count / secs`.
    pub throughput: f64,
    /// Latency percentiles in milliseconds (what is timed depends on the
    /// scenario; see its `latency_of`).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Latency samples behind the percentiles.
    pub samples: u64,
    /// Redis connections held: by the gateway on the gateway side, by the
    /// bench on the direct side.
    pub redis_connections: Option<u64>,
    /// Resident memory of the gateway process (see the report's
    /// `rss_scope`); `null` on the direct side.
    pub rss_mb: Option<f64>,
    /// Figures of this scenario only.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Side {
    /// Figures from a count, the phase's wall time and its latencies.
    pub fn new(count: u64, elapsed: Duration, latency: &Latency) -> Side {
        let secs = elapsed.as_secs_f64();
        Side {
            count,
            secs: round3(secs),
            throughput: if secs > 0.0 {
                round3(count as f64 / secs)
            } else {
                0.0
            },
            p50_ms: latency.quantile_ms(0.50),
            p99_ms: latency.quantile_ms(0.99),
            p999_ms: latency.quantile_ms(0.999),
            samples: latency.len(),
            redis_connections: None,
            rss_mb: None,
            extra: Map::new(),
        }
    }

    /// Adds the gateway's resources, and its Redis connections by client
    /// name.
    pub fn gateway_usage(mut self, usage: &Usage) -> Side {
        self.redis_connections = Some(usage.gateway_connections);
        self.rss_mb = usage.rss_mb.map(round1);
        let names: Map<String, Value> = usage
            .gateway_by_name
            .iter()
            .map(|(name, n)| (name.clone(), (*n).into()))
            .collect();
        self.with("redis_connections_by_name", names)
    }

    /// Adds the bench's own direct connections.
    pub fn direct_usage(mut self, usage: &Usage) -> Side {
        self.redis_connections = Some(usage.bench_connections);
        self
    }

    /// Adds the CPU each party spent per counted event, in microseconds:
    /// where the time goes.
    pub fn cpu(self, spent: Cpu) -> Side {
        let per_op = |d: Duration| {
            if self.count == 0 {
                Value::Null
            } else {
                round3(d.as_secs_f64() * 1e6 / self.count as f64).into()
            }
        };
        let figures = serde_json::json!({
            "gateway": spent.gateway.map_or(Value::Null, per_op),
            "client": per_op(spent.client),
            "redis": spent.redis.map_or(Value::Null, per_op),
        });
        self.with("cpu_us_per_op", figures)
    }

    /// Adds a scenario-specific figure.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Side {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The figure a report's ratio is taken of.
    pub fn figure(&self, name: &str) -> f64 {
        match name {
            "throughput" => self.throughput,
            "p50_ms" => self.p50_ms,
            "p99_ms" => self.p99_ms,
            "p999_ms" => self.p999_ms,
            other => self.extra.get(other).and_then(Value::as_f64).unwrap_or(0.0),
        }
    }
}

/// Rounds to three decimals, for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
