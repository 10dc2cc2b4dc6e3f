//! What the scenarios run against: a Redis (one server or a cluster) and a
//! gateway, either started here (the default) or given on the command
//! line. [`probe`] reads what they use; [`conn`] is the bench's own
//! connection to either kind of Redis; [`topology`] reads a cluster's
//! slot map.
//!
//! The in-process gateway gets a tokio runtime of its own, so it schedules
//! its work like a separate server process would instead of sharing worker
//! threads with the load generators. It runs one wake-up mechanism at a
//! time ([`Wakeup`]); [`Rig::use_wakeup`] replaces it by a gateway running
//! another, on the same Redis, so that a scenario can compare mechanisms
//! side by side in one run. Only one gateway is up at a time, so every
//! Redis connection not opened by the bench is that gateway's.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use streamgate::config::{Settings, Wakeup};
use streamgate::pb::event_stream_client::EventStreamClient;
use streamgate::server::{self, Gateway};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};

use crate::Fallible;
use crate::options::{Args, wakeup_name};
use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;
use crate::system;

mod conn;
mod probe;
pub mod topology;

pub use conn::Conn;
pub use probe::{Commands, Cpu, Usage};

/// `CLIENT SETNAME` of every connection a scenario's direct side opens,
/// so that `CLIENT LIST` tells the gateway's connections from the bench's.
pub const CLIENT_NAME: &str = "streamgate-bench";
/// `CLIENT SETNAME` of the bench's connections for arranging state and
/// probing: counted on neither side.
pub const ADMIN_NAME: &str = "streamgate-bench-admin";

/// Thread names of the in-process gateways' runtimes start with this.
const GATEWAY_THREADS: &str = "gateway";
/// Thread name of the bench's own runtime.
pub const BENCH_THREADS: &str = "bench";

/// Which kind of Redis a rig runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// One redis-server.
    Standalone,
    /// A Redis Cluster of this many masters, each with one replica.
    Cluster(usize),
}

/// The Redis and gateway under test.
pub struct Rig {
    /// The Redis both sides use: a URL, or a cluster's comma-separated
    /// seed URLs.
    pub redis_url: String,
    /// What kind of Redis, for the report's header.
    pub storage: String,
    /// Whether `redis_url` names a Redis Cluster (and the gateway runs in
    /// cluster mode).
    pub cluster: bool,
    /// The gateway's key prefix: its stream `s` is key `<prefix>s`.
    pub key_prefix: String,
    /// `MAXLEN ~` cap of every produce, on both sides.
    pub max_len: u64,
    /// Whose memory the `rss_mb` figures are, or `None` when unknown.
    pub rss_scope: Option<String>,
    gateway_pid: Option<u32>,
    /// A --gateway's address.
    given_gateway: Option<SocketAddr>,
    /// The mechanism a --gateway runs, when --wakeup named it.
    given_wakeup: Option<Wakeup>,
    /// The wake-up mechanisms to compare, in `--wakeup`'s order (empty
    /// with a --gateway).
    wakeups: Vec<Wakeup>,
    /// The in-process gateway, replaced by [`Rig::use_wakeup`] (`None`
    /// with a --gateway, or after a replacement failed to start).
    embedded: Mutex<Option<Embedded>>,
    /// The thread name of the in-process gateway's runtime.
    threads: String,
    /// What the in-process gateway is started with, but its wake-up.
    settings: Settings,
    admin: OnceCell<Conn>,
    probes: OnceCell<Vec<probe::Probe>>,
    slots: OnceCell<Vec<topology::SlotRange>>,
    // Last: dropped after the gateway has stopped.
    _redis: Option<Owned>,
}

/// The Redis processes a rig started, killed when dropped.
#[allow(dead_code)] // held only to be dropped
enum Owned {
    Server(RedisServer),
    Cluster(RedisCluster),
}

/// A gateway running in this process on a runtime of its own.
struct Embedded {
    runtime: Runtime,
    gateway: Gateway,
    /// Its runtime's thread name, which tells its CPU from another rig's.
    threads: String,
    /// How it wakes idle subscriptions.
    wakeup: Wakeup,
}

impl Rig {
    /// Starts (or connects to) Redis and the gateway. Synchronous: it must
    /// run outside the bench's runtime because it builds the gateway's.
    ///
    /// `--redis-url` (and `--gateway`) stand for the standalone rig, or
    /// with `--redis-cluster` for the 3-master cluster rig; any other rig
    /// is private.
    pub fn start(args: &Args, storage: Storage) -> Fallible<Rig> {
        let external = match storage {
            Storage::Standalone => !args.redis_cluster,
            Storage::Cluster(masters) => args.redis_cluster && masters == 3,
        };
        let (redis, redis_url, description) = match (&args.redis_url, external) {
            (Some(url), true) => {
                for seed in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let host = system::redis_url_host(seed).unwrap_or_default();
                    if !system::is_loopback_host(host) {
                        return Err(format!(
                            "--redis-url must name loopback addresses only, not {host:?}"
                        )
                        .into());
                    }
                }
                let description = match storage {
                    Storage::Standalone => "Redis at --redis-url".to_owned(),
                    Storage::Cluster(_) => "Redis Cluster at --redis-url".to_owned(),
                };
                (None, url.clone(), description)
            }
            _ => match storage {
                Storage::Standalone => {
                    let server = RedisServer::start(&args.redis_server)?;
                    let url = server.url();
                    (Some(Owned::Server(server)), url, "redis-server".to_owned())
                }
                Storage::Cluster(masters) => {
                    let cluster = RedisCluster::start(&args.redis_server, masters)?;
                    let url = cluster.seeds();
                    let description = format!("Redis Cluster, {}", cluster.describe());
                    (Some(Owned::Cluster(cluster)), url, description)
                }
            },
        };
        let cluster = matches!(storage, Storage::Cluster(_));
        let wakeups = args.wakeups()?;
        let given_gateway = args
            .gateway
            .filter(|_| external && args.redis_url.is_some());
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse()?,
            redis_url: redis_url.clone(),
            redis_cluster: cluster,
            key_prefix: args.key_prefix.clone(),
            max_len: args.max_len,
            // S5 holds 10,000 subscriptions over 10 client connections.
            max_subscriptions: 20_000,
            max_subscriptions_per_connection: 1_000,
            ..Settings::default()
        };
        if let Some(ms) = args.idle_recheck_ms {
            settings.idle_recheck_ms = ms;
        }
        let threads = match storage {
            Storage::Standalone => GATEWAY_THREADS.to_owned(),
            Storage::Cluster(masters) => format!("{GATEWAY_THREADS}-c{masters}"),
        };
        let (embedded, gateway_pid, rss_scope, given_wakeup) = match given_gateway {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    return Err(format!("--gateway must be a loopback address, not {addr}").into());
                }
                let scope = args.gateway_pid.map(|pid| format!("gateway process {pid}"));
                // `--wakeup` names what that gateway runs, if anything.
                let named = wakeups.first().copied();
                (None, args.gateway_pid, scope, named)
            }
            None => {
                let first = wakeups.first().copied().unwrap_or_default();
                let embedded = Embedded::start(&settings, first, threads.clone())?;
                let scope = "the bench process: in-process gateway plus the bench's own clients and histograms";
                (Some(embedded), None, Some(scope.to_owned()), None)
            }
        };
        let wakeups = if given_gateway.is_some() {
            Vec::new()
        } else {
            wakeups
        };
        Ok(Rig {
            redis_url,
            storage: description,
            cluster,
            key_prefix: args.key_prefix.clone(),
            max_len: args.max_len,
            rss_scope,
            gateway_pid,
            given_gateway,
            given_wakeup,
            wakeups,
            embedded: Mutex::new(embedded),
            threads,
            settings,
            admin: OnceCell::new(),
            probes: OnceCell::new(),
            slots: OnceCell::new(),
            _redis: redis,
        })
    }

    /// Stops the in-process gateway (if any) and then Redis (if ours).
    pub fn stop(self) {
        if let Some(embedded) = self.embedded().take() {
            embedded.stop();
        }
    }

    fn embedded(&self) -> MutexGuard<'_, Option<Embedded>> {
        self.embedded.lock().expect("embedded gateway lock")
    }

    /// The gateway's gRPC address.
    pub fn gateway_addr(&self) -> SocketAddr {
        match &*self.embedded() {
            Some(embedded) => embedded.gateway.addr(),
            // An in-process gateway that failed to restart: nothing
            // listens there, so calls fail with the connection refused.
            None => self
                .given_gateway
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1))),
        }
    }

    /// The wake-up mechanisms a scenario compares, in `--wakeup`'s order
    /// (`tracking` first by default): what it chose for the in-process
    /// gateway; empty with a --gateway, which runs what it runs.
    pub fn wakeups(&self) -> &[Wakeup] {
        &self.wakeups
    }

    /// The mechanism the gateway runs now, when known.
    pub fn wakeup(&self) -> Option<Wakeup> {
        match &*self.embedded() {
            Some(embedded) => Some(embedded.wakeup),
            None => self.given_wakeup,
        }
    }

    /// The in-process gateway's wake-up timings (`block_ms`,
    /// `idle_recheck_ms`), for a report's parameters; null for a
    /// --gateway.
    pub fn wakeup_timings(&self) -> serde_json::Value {
        if self.given_gateway.is_some() {
            return serde_json::Value::Null;
        }
        serde_json::json!({
            "block_ms": self.settings.block_ms,
            "idle_recheck_ms": self.settings.idle_recheck_ms,
        })
    }

    /// The in-process gateway's ordered-consumption timings
    /// (`rebalance_interval_ms`, `partition_lease_ms`), for a report's
    /// parameters; null for a --gateway.
    pub fn ordered_timings(&self) -> serde_json::Value {
        if self.given_gateway.is_some() {
            return serde_json::Value::Null;
        }
        serde_json::json!({
            "rebalance_interval_ms": self.settings.rebalance_interval_ms,
            "partition_lease_ms": self.settings.partition_lease_ms,
        })
    }

    /// `gateway (tracking)`: the label of the gateway's rows.
    pub fn gateway_label(&self) -> String {
        match self.wakeup() {
            Some(wakeup) => format!("gateway ({})", wakeup_name(wakeup)),
            None => "gateway".to_owned(),
        }
    }

    /// Makes the in-process gateway run `wakeup`: stops it and starts a
    /// new one (same settings, a new port) unless it runs that already.
    /// True if it was (re)started. A --gateway is left alone (false).
    pub async fn use_wakeup(&self, wakeup: Wakeup) -> Fallible<bool> {
        if self.given_gateway.is_some() {
            return Ok(false);
        }
        let old = {
            let mut embedded = self.embedded();
            match &*embedded {
                Some(current) if current.wakeup == wakeup => return Ok(false),
                // None: the last replacement failed to start; try again.
                _ => embedded.take(),
            }
        };
        let settings = self.settings.clone();
        let threads = self.threads.clone();
        // Runtimes are built and dropped outside any runtime: on a thread
        // of their own.
        let (done, started) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            if let Some(old) = old {
                old.stop();
            }
            let _ = done.send(Embedded::start(&settings, wakeup, threads));
        });
        let new = started
            .await
            .map_err(|_| "the gateway's restart thread died")??;
        *self.embedded() = Some(new);
        Ok(true)
    }

    /// A new HTTP/2 connection to the gateway: one per simulated client.
    pub async fn channel(&self) -> Fallible<Channel> {
        Ok(
            Endpoint::from_shared(format!("http://{}", self.gateway_addr()))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        )
    }

    /// An EventStream client on a new connection.
    pub async fn events(&self) -> Fallible<EventStreamClient<Channel>> {
        Ok(EventStreamClient::new(self.channel().await?))
    }

    /// A new direct Redis connection, named [`CLIENT_NAME`]: multiplexed
    /// to one Redis, or redis-rs' cluster client. Its response timeout
    /// leaves room for blocking reads of up to `block`.
    pub async fn direct(&self, block: Duration) -> Fallible<Conn> {
        self.connect(block, CLIENT_NAME).await
    }

    /// A new direct connection, named [`CLIENT_NAME`], to the node
    /// serving `key`: the server, or on a cluster the master of the key's
    /// slot (one connection, not a cluster client's one per node). For a
    /// blocking read over keys of one slot.
    pub async fn direct_to_master_of(&self, key: &str, block: Duration) -> Fallible<Conn> {
        if !self.cluster {
            return self.direct(block).await;
        }
        let slot = topology::slot_of(key.as_bytes());
        let master = topology::master_of(self.slot_ranges().await?, slot)
            .ok_or_else(|| format!("slot {slot} has no master"))?;
        let url = topology::node_url(self.first_seed(), master);
        let mut conn = single(&url, block + Duration::from_secs(5)).await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(Conn::Single(conn))
    }

    async fn connect(&self, block: Duration, name: &str) -> Fallible<Conn> {
        let response_timeout = block + Duration::from_secs(5);
        let connect_timeout = Duration::from_secs(5);
        let mut setname = redis::cmd("CLIENT");
        setname.arg("SETNAME").arg(name);
        if self.cluster {
            let seeds: Vec<&str> = self
                .redis_url
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let mut conn = ClusterClientBuilder::new(seeds)
                .response_timeout(response_timeout)
                .connection_timeout(connect_timeout)
                .build()?
                .get_async_connection()
                .await?;
            // The client holds a connection to every node, replicas
            // included: name each of them.
            let every_node = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllNodes,
                Some(ResponsePolicy::AllSucceeded),
            ));
            conn.route_command(setname, every_node).await?;
            Ok(Conn::Cluster(conn))
        } else {
            let mut conn = single(&self.redis_url, response_timeout).await?;
            setname.query_async::<()>(&mut conn).await?;
            Ok(Conn::Single(conn))
        }
    }

    /// The bench's long-lived connection for arranging state; never used
    /// by a measured loop, counted on neither side.
    pub async fn admin(&self) -> Fallible<Conn> {
        let conn = self
            .admin
            .get_or_try_init(|| self.connect(Duration::ZERO, ADMIN_NAME))
            .await?;
        Ok(conn.clone())
    }

    /// The Redis key of the gateway's stream `stream`.
    pub fn gateway_key(&self, stream: &str) -> String {
        format!("{}{stream}", self.key_prefix)
    }

    /// A cluster's slot ranges (asked once); empty for one Redis.
    pub async fn slot_ranges(&self) -> Fallible<&[topology::SlotRange]> {
        let ranges = self
            .slots
            .get_or_try_init(|| async {
                if !self.cluster {
                    return Ok(Vec::new());
                }
                let mut conn = single(self.first_seed(), Duration::from_secs(5)).await?;
                topology::slot_ranges(&mut conn).await
            })
            .await?;
        Ok(ranges)
    }

    /// The URL of every Redis node, and whether it is a master: the
    /// server, or every node of the cluster's slot map (masters first, in
    /// slot order).
    async fn node_urls(&self) -> Fallible<Vec<(String, bool)>> {
        if !self.cluster {
            return Ok(vec![(self.redis_url.clone(), true)]);
        }
        let seed = self.first_seed();
        let ranges = self.slot_ranges().await?;
        let masters = topology::masters(ranges);
        let replicas = topology::all_nodes(ranges)
            .into_iter()
            .filter(|node| !masters.contains(node));
        Ok(masters
            .iter()
            .map(|addr| (topology::node_url(seed, addr), true))
            .chain(replicas.map(|addr| (topology::node_url(seed, &addr), false)))
            .collect())
    }

    fn first_seed(&self) -> &str {
        self.redis_url.split(',').next().unwrap_or_default().trim()
    }
}

/// A multiplexed connection to one Redis node.
async fn single(url: &str, response_timeout: Duration) -> Fallible<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

impl Embedded {
    fn start(settings: &Settings, wakeup: Wakeup, threads: String) -> Fallible<Embedded> {
        let config = Settings {
            wakeup,
            ..settings.clone()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(&threads)
            .enable_all()
            .build()?;
        let gateway = runtime
            .block_on(server::start(&config))
            .map_err(|e| format!("the in-process gateway did not start: {e}"))?;
        Ok(Embedded {
            runtime,
            gateway,
            threads,
            wakeup,
        })
    }

    /// Shuts the gateway down gracefully (at most 10 s), then its runtime.
    /// Must not run inside a runtime.
    fn stop(self) {
        let Embedded {
            runtime, gateway, ..
        } = self;
        gateway.shutdown();
        let _ = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), gateway.wait()).await
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
