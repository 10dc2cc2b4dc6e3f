//! Prometheus metrics: what an operator alerts on.
//!
//! One [`Metrics`] per gateway (a registry of its own, not a global, so
//! several gateways can run in one process, as the tests do). [`rpc`]
//! records every request from a tower layer around the gRPC routes; the api
//! layer counts entries; [`poll`] refreshes the per-group gauges from Redis
//! in the background; [`http`] serves `/metrics`.

pub mod http;
pub mod poll;
pub mod rpc;

pub use rpc::RpcMetricsLayer;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Streams whose groups the poller watches, at most. Beyond this, new
/// streams are served but not polled (and a warning is logged once).
pub const MAX_POLLED_STREAMS: usize = 1000;

/// Labels of per-RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Method name, e.g. `Produce`.
    pub rpc: &'static str,
    /// gRPC status code name, e.g. `Ok`, `NotFound`.
    pub code: &'static str,
}

/// Labels of per-group gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Client stream name.
    pub stream: String,
    /// Group name.
    pub group: String,
}

/// Labels of the ordered-consumption ownership counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OwnershipLabels {
    /// Client stream name.
    pub stream: String,
    /// Group name.
    pub group: String,
    /// `acquired`, `released` or `lost`.
    pub change: &'static str,
}

/// Labels of the wake-up's connection gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakeupLabels {
    /// `tracking` or `xread`.
    pub mechanism: String,
}

/// Labels of per-stream gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// Client stream name.
    pub stream: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: HistogramFamily<RpcLabels>,
    /// Entries appended by Produce.
    pub produced: Counter,
    /// Entries delivered by Subscribe (first deliveries and re-deliveries).
    pub delivered: Counter,
    /// Entries acknowledged through Ack (XACK's count).
    pub acked: Counter,
    /// Entries claimed by Reap.
    pub reclaimed: Counter,
    /// Pending entries found deleted (trimmed) by Reap.
    pub deleted_while_pending: Counter,
    /// Open Subscribe streams.
    pub open_subscriptions: Gauge,
    /// Open Tail streams.
    pub open_tails: Gauge,
    /// Connections the wake-up holds to Redis, by mechanism.
    pub wakeup_connections: Family<WakeupLabels, Gauge>,
    /// 1 while Redis answers the health check's PING, else 0.
    pub redis_up: Gauge,
    /// Request bytes held for calls not yet answered (`--max-buffered-bytes`).
    pub buffered_request_bytes: Gauge,
    /// Calls waiting for room in that budget now: clients whose requests
    /// the gateway is not reading.
    pub read_pushback_calls: Gauge,
    /// Seconds calls waited for room in that budget, summed over calls:
    /// the time the gateway pushed back on its clients.
    pub read_pushback: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Per group: entries not yet delivered (absent when Redis cannot tell).
    pub group_lag: Family<GroupLabels, Gauge>,
    /// Per group: entries delivered and not acknowledged.
    pub group_pending: Family<GroupLabels, Gauge>,
    /// Per group: idle time of the oldest pending entry.
    pub group_oldest_pending_idle: Family<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Per group: number of consumers.
    pub group_consumers: Family<GroupLabels, Gauge>,
    /// Per stream: number of entries.
    pub stream_length: Family<StreamLabels, Gauge>,
    /// Per group: partitions its ordered subscriptions here own.
    pub partitions_owned: Family<GroupLabels, Gauge>,
    /// Per group and change: partitions taken, given up or lost here.
    pub ownership_changes: Family<OwnershipLabels, Counter>,
    streams: Mutex<BTreeSet<String>>,
    polling: std::sync::atomic::AtomicBool,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("streamgate");
        let m = Metrics {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(|| {
                // 0.25 ms .. ~8 s
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
            produced: Counter::default(),
            delivered: Counter::default(),
            acked: Counter::default(),
            reclaimed: Counter::default(),
            deleted_while_pending: Counter::default(),
            open_subscriptions: Gauge::default(),
            open_tails: Gauge::default(),
            wakeup_connections: Family::default(),
            redis_up: Gauge::default(),
            buffered_request_bytes: Gauge::default(),
            read_pushback_calls: Gauge::default(),
            read_pushback: Counter::default(),
            group_lag: Family::default(),
            group_pending: Family::default(),
            group_oldest_pending_idle: Family::default(),
            group_consumers: Family::default(),
            stream_length: Family::default(),
            partitions_owned: Family::default(),
            ownership_changes: Family::default(),
            streams: Mutex::new(BTreeSet::new()),
            polling: std::sync::atomic::AtomicBool::new(false),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "rpc_requests",
            "gRPC requests by method and status code",
            m.rpc_requests.clone(),
        );
        r.register(
            "rpc_duration_seconds",
            "gRPC request latency by method and status code (server streams: until the stream is set up)",
            m.rpc_duration.clone(),
        );
        r.register(
            "entries_produced",
            "Entries appended by Produce",
            m.produced.clone(),
        );
        r.register(
            "entries_delivered",
            "Entries delivered by Subscribe",
            m.delivered.clone(),
        );
        r.register(
            "entries_acked",
            "Entries acknowledged through Ack",
            m.acked.clone(),
        );
        r.register(
            "entries_reclaimed",
            "Entries claimed by Reap",
            m.reclaimed.clone(),
        );
        r.register(
            "entries_deleted_while_pending",
            "Pending entries whose payload was trimmed before anyone acked them (found by Reap)",
            m.deleted_while_pending.clone(),
        );
        r.register(
            "open_subscriptions",
            "Open Subscribe streams",
            m.open_subscriptions.clone(),
        );
        r.register("open_tails", "Open Tail streams", m.open_tails.clone());
        r.register(
            "wakeup_connections",
            "Connections the wake-up of idle live streams holds to Redis: tracking, one per \
             node with watched streams; xread (the fallback), one per shard of up to 100 streams",
            m.wakeup_connections.clone(),
        );
        r.register(
            "redis_up",
            "1 while Redis answers the health check, else 0",
            m.redis_up.clone(),
        );
        r.register(
            "buffered_request_bytes",
            "Request bytes held for calls not yet answered (limit: --max-buffered-bytes)",
            m.buffered_request_bytes.clone(),
        );
        r.register(
            "read_pushback_calls",
            "Calls waiting for room in --max-buffered-bytes: clients the gateway is not reading now",
            m.read_pushback_calls.clone(),
        );
        r.register(
            "read_pushback_seconds",
            "Time calls waited for room in --max-buffered-bytes before reading on, summed over calls",
            m.read_pushback.clone(),
        );
        r.register(
            "group_lag",
            "Entries in the stream not yet delivered to the group (absent when Redis cannot tell)",
            m.group_lag.clone(),
        );
        r.register(
            "group_pending",
            "Entries delivered to the group and not acknowledged",
            m.group_pending.clone(),
        );
        r.register(
            "group_oldest_pending_idle_seconds",
            "Idle time of the group's oldest pending entry (0 when nothing is pending)",
            m.group_oldest_pending_idle.clone(),
        );
        r.register(
            "group_consumers",
            "Consumers in the group",
            m.group_consumers.clone(),
        );
        r.register(
            "stream_length",
            "Entries in the stream",
            m.stream_length.clone(),
        );
        r.register(
            "partitions_owned",
            "Partitions of the group owned by its ordered subscriptions on this gateway",
            m.partitions_owned.clone(),
        );
        r.register(
            "partition_ownership_changes",
            "Partitions of the group this gateway's ordered subscriptions took (acquired), \
             gave up in a rebalance or at their end (released), or found taken (lost)",
            m.ownership_changes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records one finished request.
    pub fn observe_rpc(&self, rpc: &'static str, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            rpc,
            code: code_name(code),
        };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Turns on the bookkeeping of served streams for the group poller
    /// (off when no poller runs, so nothing is remembered in vain).
    pub fn enable_polling(&self) {
        self.polling
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Remembers that this gateway serves `stream`, so that the poller
    /// exports its groups.
    pub fn note_stream(&self, stream: &str) {
        if !self.polling.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.contains(stream) {
            return;
        }
        if streams.len() >= MAX_POLLED_STREAMS {
            if streams.len() == MAX_POLLED_STREAMS {
                tracing::warn!(
                    max = MAX_POLLED_STREAMS,
                    "too many streams to poll; new ones get no group metrics"
                );
                // A sentinel entry that sorts first keeps the warning single.
                streams.insert(String::new());
            }
            return;
        }
        streams.insert(stream.to_owned());
    }

    /// The streams to poll.
    pub fn streams(&self) -> Vec<String> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.iter().filter(|s| !s.is_empty()).cloned().collect()
    }

    /// Stops polling a stream that no longer exists.
    pub fn forget_stream(&self, stream: &str) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.remove(stream);
    }

    /// The exposition text (OpenMetrics, which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The label of a status code, as tonic's `Debug` spells it, without
/// formatting a `String` for every request.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Decrements a gauge when dropped: tracks how long a stream stays open,
/// however it ends.
pub struct OpenGuard(Gauge);

impl OpenGuard {
    /// Increments `gauge` now and decrements it on drop.
    pub fn new(gauge: &Gauge) -> OpenGuard {
        gauge.inc();
        OpenGuard(gauge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_are_prefixed_and_counters_suffixed() {
        let m = Metrics::new();
        m.produced.inc_by(3);
        m.observe_rpc("Produce", tonic::Code::Ok, Duration::from_millis(2));
        let text = m.encode();
        assert!(
            text.contains("streamgate_entries_produced_total 3"),
            "{text}"
        );
        assert!(
            text.contains("streamgate_rpc_requests_total{rpc=\"Produce\",code=\"Ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("streamgate_rpc_duration_seconds_count{rpc=\"Produce\",code=\"Ok\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn code_names_match_tonics_spelling() {
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[test]
    fn open_guard_tracks_open_streams() {
        let m = Metrics::new();
        let a = OpenGuard::new(&m.open_subscriptions);
        let b = OpenGuard::new(&m.open_subscriptions);
        drop(a);
        assert_eq!(m.open_subscriptions.get(), 1);
        drop(b);
        assert_eq!(m.open_subscriptions.get(), 0);
    }
}
