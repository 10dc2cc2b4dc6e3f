//! What the scenarios run against: a Redis and a gateway, either started
//! here (the default) or given on the command line. [`probe`] reads what
//! they use.
//!
//! The in-process gateway gets a tokio runtime of its own, so it schedules
//! its work like a separate server process would instead of sharing worker
//! threads with the load generators.

use std::net::SocketAddr;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use streamgate::config::Settings;
use streamgate::pb::event_stream_client::EventStreamClient;
use streamgate::server::{self, Gateway};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};

use crate::Fallible;
use crate::options::Args;
use crate::redis_server::RedisServer;
use crate::system;

mod probe;

pub use probe::{Cpu, Usage};

/// `CLIENT SETNAME` of every connection the bench opens itself, so that
/// `CLIENT LIST` tells the gateway's connections from the bench's.
pub const CLIENT_NAME: &str = "streamgate-bench";

/// Thread name of the in-process gateway's runtime.
const GATEWAY_THREADS: &str = "gateway";
/// Thread name of the bench's own runtime.
pub const BENCH_THREADS: &str = "bench";

/// The Redis and gateway under test.
pub struct Rig {
    /// The Redis both sides use.
    pub redis_url: String,
    /// The gateway's gRPC address.
    pub gateway_addr: SocketAddr,
    /// The gateway's key prefix: its stream `s` is key `<prefix>s`.
    pub key_prefix: String,
    /// `MAXLEN ~` cap of every produce, on both sides.
    pub max_len: u64,
    /// Whose memory the `rss_mb` figures are, or `None` when unknown.
    pub rss_scope: Option<String>,
    gateway_pid: Option<u32>,
    embedded: Option<Embedded>,
    admin: OnceCell<MultiplexedConnection>,
    redis_pid: OnceCell<Option<u32>>,
    // Last: dropped after the gateway has stopped.
    _redis: Option<RedisServer>,
}

/// A gateway running in this process on a runtime of its own.
struct Embedded {
    runtime: Runtime,
    gateway: Gateway,
}

impl Rig {
    /// Starts (or connects to) Redis and the gateway. Synchronous: it must
    /// run outside the bench's runtime because it builds the gateway's.
    pub fn start(args: &Args) -> Fallible<Rig> {
        let (redis, redis_url) = match &args.redis_url {
            Some(url) => {
                let host = system::redis_url_host(url).unwrap_or_default();
                if !system::is_loopback_host(host) {
                    return Err(
                        format!("--redis-url must be a loopback address, not {host:?}").into(),
                    );
                }
                (None, url.clone())
            }
            None => {
                let server = RedisServer::start(&args.redis_server)?;
                let url = server.url();
                (Some(server), url)
            }
        };
        let (embedded, gateway_addr, gateway_pid, rss_scope) = match args.gateway {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    return Err(format!("--gateway must be a loopback address, not {addr}").into());
                }
                let scope = args.gateway_pid.map(|pid| format!("gateway process {pid}"));
                (None, addr, args.gateway_pid, scope)
            }
            None => {
                let embedded = Embedded::start(&redis_url, args)?;
                let addr = embedded.gateway.addr();
                let scope = "the bench process: in-process gateway plus the bench's own clients and histograms";
                (Some(embedded), addr, None, Some(scope.to_owned()))
            }
        };
        Ok(Rig {
            redis_url,
            gateway_addr,
            key_prefix: args.key_prefix.clone(),
            max_len: args.max_len,
            rss_scope,
            gateway_pid,
            embedded,
            admin: OnceCell::new(),
            redis_pid: OnceCell::new(),
            _redis: redis,
        })
    }

    /// Stops the in-process gateway (if any) and then Redis (if ours).
    pub fn stop(mut self) {
        if let Some(Embedded { runtime, gateway }) = self.embedded.take() {
            gateway.shutdown();
            let _ = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), gateway.wait()).await
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }

    /// A new HTTP/2 connection to the gateway: one per simulated client.
    pub async fn channel(&self) -> Fallible<Channel> {
        Ok(
            Endpoint::from_shared(format!("http://{}", self.gateway_addr))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        )
    }

    /// An EventStream client on a new connection.
    pub async fn events(&self) -> Fallible<EventStreamClient<Channel>> {
        Ok(EventStreamClient::new(self.channel().await?))
    }

    /// A new direct Redis connection, named [`CLIENT_NAME`]. Its response
    /// timeout leaves room for blocking reads of up to `block`.
    pub async fn direct(&self, block: Duration) -> Fallible<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(block + Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let mut conn = redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(conn)
    }

    /// The bench's long-lived connection for arranging state and probing;
    /// never used by a measured loop.
    pub async fn admin(&self) -> Fallible<MultiplexedConnection> {
        let conn = self
            .admin
            .get_or_try_init(|| self.direct(Duration::ZERO))
            .await?;
        Ok(conn.clone())
    }

    /// The Redis key of the gateway's stream `stream`.
    pub fn gateway_key(&self, stream: &str) -> String {
        format!("{}{stream}", self.key_prefix)
    }
}

impl Embedded {
    fn start(redis_url: &str, args: &Args) -> Fallible<Embedded> {
        let config = Settings {
            listen: "127.0.0.1:0".parse()?,
            redis_url: redis_url.to_owned(),
            key_prefix: args.key_prefix.clone(),
            max_len: args.max_len,
            // S5 holds 10,000 subscriptions over 10 client connections.
            max_subscriptions: 20_000,
            max_subscriptions_per_connection: 1_000,
            ..Settings::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(GATEWAY_THREADS)
            .enable_all()
            .build()?;
        let gateway = runtime
            .block_on(server::start(&config))
            .map_err(|e| format!("the in-process gateway did not start: {e}"))?;
        Ok(Embedded { runtime, gateway })
    }
}
