//! `streamgate demo`: the seed's order demo, live in the dashboard.
//!
//! The gateway runs as usual; next to it run demo consumers that use the
//! public gRPC API over a real connection to the gateway's own address,
//! exactly like a service in another process would: `worker-a` and
//! `worker-b` share group `notifications`, `worker-c` is alone in
//! `analytics`. Each acks what it processes. The dashboard adds the demo's
//! controls: `Crash next 3` (a consumer drops its next three deliveries
//! unacknowledged), `Reclaim` hands the reclaimed entries to the chosen
//! consumer, which processes them, and `Reset demo`.

mod handoff;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::Settings;
use futures_util::future::BoxFuture;

use crate::dashboard::{self, LocalGrpc, OnBehalf};
use crate::pb;
use crate::server::Gateway;
use crate::shutdown::Shutdown;
pub use handoff::HANDOFF_BATCHES;
use handoff::Handoff;
use worker::Stats;

/// The demo's consumers: (group, consumer).
pub const CONSUMERS: [(&str, &str); 3] = [
    ("notifications", "worker-a"),
    ("notifications", "worker-b"),
    ("analytics", "worker-c"),
];

/// Most demo consumers running at once. `Add consumer` needs no token on
/// a gateway without `--auth-config`, and each consumer is a task, a
/// subscription and its counters: a page clicking in a loop must not grow
/// them without end.
pub const MAX_CONSUMERS: usize = 32;

/// What `streamgate demo` runs; plain values, defaults as the seed's demo.
#[derive(Clone, Debug)]
pub struct DemoSettings {
    /// Address to serve gRPC on (the demo consumers connect to it too).
    pub listen: SocketAddr,
    /// Address of the dashboard.
    pub http_listen: SocketAddr,
    /// Redis to run the demo on.
    pub redis_url: String,
    /// Keep the stream and groups as they are instead of starting from an
    /// empty stream.
    pub no_reset: bool,
    /// The demo stream.
    pub stream_key: String,
    /// `Reclaim` takes entries idle at least this long, in milliseconds.
    pub claim_min_idle_ms: u64,
}

impl Default for DemoSettings {
    fn default() -> DemoSettings {
        let gateway = Settings::default();
        DemoSettings {
            listen: gateway.listen,
            http_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8083)),
            redis_url: gateway.redis_url,
            no_reset: false,
            stream_key: "demo:events:orders".to_owned(),
            claim_min_idle_ms: dashboard::DEFAULT_CLAIM_MIN_IDLE_MS,
        }
    }
}

impl DemoSettings {
    /// The gateway settings of the demo: the serve defaults with the
    /// demo's addresses and the seed's `MAXLEN ~ 2000`. The dashboard is
    /// started by [`start`], with the demo's controls.
    pub fn gateway_settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            redis_url: self.redis_url.clone(),
            max_len: 2000,
            ..Settings::default()
        }
    }
}

/// Starts the demo next to a running gateway: prepares the stream (unless
/// `no_reset`), starts the consumers and serves the dashboard with the
/// demo's controls. Returns the dashboard's address.
pub async fn start(gateway: &Gateway, config: &DemoSettings) -> Result<SocketAddr, String> {
    crate::namespace::stream_name("--stream-key", &config.stream_key).map_err(|e| e.to_string())?;
    let demo = Demo::new(
        gateway.addr(),
        config.stream_key.clone(),
        config.claim_min_idle_ms,
        gateway.shutdown_signal(),
        gateway.tasks().clone(),
    )?;
    let local = gateway.local();
    if config.no_reset {
        demo.start_defaults();
    } else {
        // Redis may still be starting: retry a reset that finds it away.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match demo.reset(&local, &OnBehalf::default()).await {
                Ok(()) => break,
                Err(status)
                    if status.code() == Code::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(status) => {
                    return Err(format!(
                        "cannot reset the demo stream: {}",
                        status.message()
                    ));
                }
            }
        }
    }
    dashboard::serve(
        config.http_listen,
        dashboard::Options {
            local,
            auth_enabled: gateway.auth_enabled(),
            demo: Some(demo as Arc<dyn dashboard::DemoControls>),
        },
        gateway.shutdown_signal(),
        gateway.tasks(),
    )
    .await
    .map_err(|e| format!("cannot serve the dashboard on {}: {e}", config.http_listen))
}

/// A running demo consumer.
struct Worker {
    group: String,
    consumer: String,
    stats: Arc<Mutex<Stats>>,
    handed: Handoff,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The demo's consumers and settings; shared by the dashboard.
pub struct Demo {
    stream: String,
    claim_min_idle_ms: u64,
    channel: Channel,
    workers: Mutex<Vec<Worker>>,
    shutdown: Shutdown,
    tasks: TaskTracker,
}

impl Demo {
    /// Prepares the demo on `stream` against the gateway listening on
    /// `grpc` (an unspecified address is reached on loopback). Starts no
    /// consumer yet: see [`Demo::reset`] and [`Demo::start_defaults`].
    pub fn new(
        grpc: SocketAddr,
        stream: String,
        claim_min_idle_ms: u64,
        shutdown: Shutdown,
        tasks: TaskTracker,
    ) -> Result<Arc<Demo>, String> {
        let mut target = grpc;
        if target.ip().is_unspecified() {
            target.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let channel = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| format!("gateway address {target}: {e}"))?
            .connect_lazy();
        Ok(Arc::new(Demo {
            stream,
            claim_min_idle_ms,
            channel,
            workers: Mutex::default(),
            shutdown,
            tasks,
        }))
    }

    /// The demo stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// `Reclaim`'s idle threshold (`--claim-min-idle-ms`).
    pub fn claim_min_idle_ms(&self) -> u64 {
        self.claim_min_idle_ms
    }

    /// The demo's fixed setup, for the page.
    pub fn info(&self) -> Value {
        json!({
            "stream": self.stream,
            "claim_min_idle_ms": self.claim_min_idle_ms,
            "consumers": CONSUMERS.iter()
                .map(|(g, c)| json!({ "group": g, "consumer": c }))
                .collect::<Vec<_>>(),
        })
    }

    /// Each running demo consumer's counters and newest deliveries.
    pub fn state(&self) -> Value {
        let workers = self.lock();
        let consumers: Vec<Value> = workers
            .iter()
            .map(|w| {
                let s = worker::lock(&w.stats);
                json!({
                    "group": w.group,
                    "consumer": w.consumer,
                    "processed": s.processed,
                    "dropped": s.dropped,
                    "crash_left": s.crash_left,
                    "recent": s.recent,
                    "error": s.error,
                })
            })
            .collect();
        json!({ "consumers": consumers })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the default consumers that are not running.
    pub fn start_defaults(&self) {
        for (group, consumer) in CONSUMERS {
            // Only a running namesake or a full house refuses, and either
            // way the consumer stays as it is.
            let _ = self.spawn(group, consumer);
        }
    }

    /// Starts a consumer unless one of that name runs in that group
    /// (ALREADY_EXISTS) or [`MAX_CONSUMERS`] run (RESOURCE_EXHAUSTED).
    fn spawn(&self, group: &str, consumer: &str) -> Result<(), Status> {
        let mut workers = self.lock();
        if workers
            .iter()
            .any(|w| w.group == group && w.consumer == consumer)
        {
            return Err(Status::already_exists(format!(
                "demo consumer {consumer:?} already runs in group {group:?}"
            )));
        }
        if workers.len() >= MAX_CONSUMERS {
            return Err(Status::resource_exhausted(format!(
                "the demo runs at most {MAX_CONSUMERS} consumers: remove one first"
            )));
        }
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (handed, handed_rx) = handoff::channel();
        let stop = CancellationToken::new();
        let spec = worker::Spec {
            channel: self.channel.clone(),
            stream: self.stream.clone(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
        };
        let shutdown = self.shutdown.clone();
        let task_stop = stop.clone();
        let task_stats = stats.clone();
        // The gateway's shutdown stops every consumer as well.
        let task = self.tasks.spawn(async move {
            tokio::select! {
                () = shutdown.triggered() => {}
                () = worker::run(spec, task_stats, handed_rx, task_stop) => {}
            }
        });
        workers.push(Worker {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            stats,
            handed,
            stop,
            task,
        });
        Ok(())
    }

    /// `Add consumer` on the demo stream: a new demo consumer in `group`.
    /// The group is created first (CreateGroup with the page's token), so
    /// names are validated and the caller authorized as for any RPC.
    pub async fn add_consumer(
        &self,
        local: &LocalGrpc,
        who: &OnBehalf,
        group: &str,
        consumer: &str,
    ) -> Result<(), Status> {
        if consumer.is_empty() {
            return Err(Status::invalid_argument("consumer: must not be empty"));
        }
        self.create_group(local, who, group).await?;
        self.spawn(group, consumer)
    }

    /// Creates `group` on the demo stream at its end (CreateGroup with
    /// `who`'s token, so names are validated and the caller authorized as
    /// for any RPC). A group that exists already is kept as it is, which
    /// is what `Add consumer` to a running group relies on.
    async fn create_group(
        &self,
        local: &LocalGrpc,
        who: &OnBehalf,
        group: &str,
    ) -> Result<(), Status> {
        local
            .admin()
            .create_group(who.request(pb::CreateGroupRequest {
                stream: self.stream.clone(),
                group: group.to_owned(),
                start_id: "$".to_owned(),
                mkstream: Some(true),
            }))
            .await?;
        Ok(())
    }

    /// Stops a demo consumer, if one runs, and waits until it stopped
    /// reading, so that removing it from Redis afterwards is final.
    pub async fn stop_consumer(&self, group: &str, consumer: &str) {
        let worker = {
            let mut workers = self.lock();
            workers
                .iter()
                .position(|w| w.group == group && w.consumer == consumer)
                .map(|i| workers.remove(i))
        };
        if let Some(worker) = worker {
            worker.stop.cancel();
            let _ = worker.task.await;
        }
    }

    /// Arms `Crash next N` on the demo consumer named `consumer` (in
    /// `group`, when given).
    pub fn crash_next(&self, group: Option<&str>, consumer: &str, n: u32) -> Result<(), Status> {
        let workers = self.lock();
        let worker = workers
            .iter()
            .find(|w| w.consumer == consumer && group.is_none_or(|g| g == w.group))
            .ok_or_else(|| Status::not_found(format!("no demo consumer {consumer:?} runs")))?;
        worker::lock(&worker.stats).crash_left += n;
        Ok(())
    }

    /// Gives entries a `Reclaim` moved to `consumer` to that demo consumer
    /// to process (no-op for a consumer the demo does not run). Never
    /// waits: false when that consumer already has
    /// [`HANDOFF_BATCHES`] waiting, and the entries stay pending for it in
    /// Redis until the next `Reclaim`.
    pub fn hand_over(&self, group: &str, consumer: &str, entries: Vec<pb::Entry>) -> bool {
        if entries.is_empty() {
            return true;
        }
        let workers = self.lock();
        workers
            .iter()
            .find(|w| w.group == group && w.consumer == consumer)
            .is_none_or(|w| w.handed.offer(consumer, entries))
    }

    /// `Reset demo`: stops every demo consumer, deletes the stream's groups,
    /// empties the stream and its dead-letter stream, creates the two
    /// groups at the (empty) end and starts the three consumers again.
    /// Every step is an RPC with the page's token.
    pub async fn reset(&self, local: &LocalGrpc, who: &OnBehalf) -> Result<(), Status> {
        let running: Vec<Worker> = std::mem::take(&mut *self.lock());
        for w in running {
            w.stop.cancel();
            let _ = w.task.await;
        }
        let mut admin = local.admin();
        let groups = match admin
            .list_groups(who.request(pb::ListGroupsRequest {
                stream: self.stream.clone(),
            }))
            .await
        {
            Ok(r) => r.into_inner().groups,
            Err(status) if status.code() == Code::NotFound => Vec::new(),
            Err(status) => return Err(status),
        };
        for g in groups {
            admin
                .delete_group(who.request(pb::DeleteGroupRequest {
                    stream: self.stream.clone(),
                    group: g.name,
                }))
                .await?;
        }
        for stream in [self.stream.clone(), format!("{}:dlq", self.stream)] {
            local
                .events()
                .trim(who.request(pb::TrimRequest {
                    stream,
                    strategy: Some(pb::trim_request::Strategy::MaxLen(0)),
                    exact: true,
                    ..pb::TrimRequest::default()
                }))
                .await?;
        }
        for group in ["notifications", "analytics"] {
            self.create_group(local, who, group).await?;
        }
        self.start_defaults();
        Ok(())
    }
}

/// The dashboard steers the demo through this; each method is the
/// inherent one of the same name.
impl dashboard::DemoControls for Demo {
    fn stream(&self) -> &str {
        Demo::stream(self)
    }

    fn claim_min_idle_ms(&self) -> u64 {
        Demo::claim_min_idle_ms(self)
    }

    fn info(&self) -> Value {
        Demo::info(self)
    }

    fn state(&self) -> Value {
        Demo::state(self)
    }

    fn add_consumer<'a>(
        &'a self,
        local: &'a LocalGrpc,
        who: &'a OnBehalf,
        group: &'a str,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(Demo::add_consumer(self, local, who, group, consumer))
    }

    fn stop_consumer<'a>(&'a self, group: &'a str, consumer: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(Demo::stop_consumer(self, group, consumer))
    }

    fn crash_next(&self, group: Option<&str>, consumer: &str, n: u32) -> Result<(), Status> {
        Demo::crash_next(self, group, consumer, n)
    }

    fn hand_over(&self, group: &str, consumer: &str, entries: Vec<pb::Entry>) -> bool {
        Demo::hand_over(self, group, consumer, entries)
    }

    fn reset<'a>(
        &'a self,
        local: &'a LocalGrpc,
        who: &'a OnBehalf,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(Demo::reset(self, local, who))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A demo whose consumers cannot subscribe (nothing listens on port
    /// 1), so they never take a hand-off.
    fn unreachable_demo(shutdown: &Shutdown) -> Arc<Demo> {
        Demo::new(
            "127.0.0.1:1".parse().unwrap(),
            "orders".to_owned(),
            0,
            shutdown.clone(),
            TaskTracker::new(),
        )
        .unwrap()
    }

    fn batch() -> Vec<pb::Entry> {
        vec![pb::Entry::default()]
    }

    #[tokio::test]
    async fn a_consumer_that_takes_nothing_is_handed_a_bounded_backlog() {
        let shutdown = Shutdown::new();
        let demo = unreachable_demo(&shutdown);
        demo.spawn("g", "stuck").unwrap();
        for i in 0..HANDOFF_BATCHES {
            assert!(demo.hand_over("g", "stuck", batch()), "batch {i}");
        }
        assert!(
            !demo.hand_over("g", "stuck", batch()),
            "a batch beyond the bound was taken"
        );
        // Not a demo consumer: nothing to hand to, nothing refused.
        assert!(demo.hand_over("g", "elsewhere", batch()));
        shutdown.trigger();
    }

    #[tokio::test]
    async fn add_consumer_stops_at_the_bound() {
        let shutdown = Shutdown::new();
        let demo = unreachable_demo(&shutdown);
        for i in 0..MAX_CONSUMERS {
            demo.spawn("g", &format!("c{i}")).unwrap();
        }
        let refused = demo.spawn("g", "one-more").unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("32"), "{}", refused.message());
        assert_eq!(
            demo.spawn("g", "c0").unwrap_err().code(),
            Code::AlreadyExists
        );
        demo.stop_consumer("g", "c0").await;
        demo.spawn("g", "one-more").unwrap();
        shutdown.trigger();
    }
}
