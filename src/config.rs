//! Command line and environment configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::ApiSettings;
use crate::broker::BrokerOptions;

/// streamgate: a gRPC gateway to Redis Streams consumer groups.
#[derive(Debug, Parser)]
#[command(name = "streamgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeConfig),
}

/// Everything `streamgate serve` needs; every flag also reads an
/// environment variable.
#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    /// Address to serve gRPC on; port 0 picks a free port. The bound address
    /// is printed as `listening on ADDR`.
    #[arg(long, env = "STREAMGATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Redis to serve from (`redis://[user:pass@]host:port[/db]`).
    #[arg(
        long,
        env = "STREAMGATE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Prefix of every Redis key the gateway touches: stream `s` is key
    /// `<prefix>s`.
    #[arg(long, env = "STREAMGATE_KEY_PREFIX", default_value = "")]
    pub key_prefix: String,

    /// Default approximate length cap (`MAXLEN ~`) applied by Produce; 0
    /// disables it.
    #[arg(long, env = "STREAMGATE_MAX_LEN", default_value_t = 10_000)]
    pub max_len: u64,

    /// Upper bound of one blocking read, in milliseconds: a cancelled
    /// subscription stops reading within about this long.
    #[arg(long, env = "STREAMGATE_BLOCK_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub block_ms: u64,

    /// Subscribe batch size when the request sets none.
    #[arg(long, env = "STREAMGATE_BATCH_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Largest batch, page or count a request may ask for.
    #[arg(long, env = "STREAMGATE_MAX_BATCH_SIZE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_size: u32,

    /// Most events in one Produce call.
    #[arg(long, env = "STREAMGATE_MAX_PRODUCE_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_produce_events: u64,

    /// How long a Redis command may take before the request fails, in
    /// milliseconds.
    #[arg(long, env = "STREAMGATE_REDIS_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_timeout_ms: u64,

    /// How long Produce remembers an event's idempotency key, in
    /// milliseconds (default 24 h).
    #[arg(long, env = "STREAMGATE_DEDUP_WINDOW_MS", default_value_t = 86_400_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_window_ms: u64,

    /// Subscribe heartbeat interval when the request sets none, in
    /// milliseconds; 0 disables heartbeats by default.
    #[arg(long, env = "STREAMGATE_HEARTBEAT_MS", default_value_t = 15_000)]
    pub heartbeat_ms: u32,

    /// How often the health check pings Redis, in milliseconds.
    #[arg(long, env = "STREAMGATE_HEALTH_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub health_interval_ms: u64,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (off unless set;
    /// port 0 picks a free port, printed as `metrics on ADDR`).
    #[arg(long, env = "STREAMGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often the per-group metrics (lag, pending, oldest pending idle)
    /// are refreshed from Redis, in milliseconds.
    #[arg(long, env = "STREAMGATE_METRICS_POLL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub metrics_poll_ms: u64,

    /// After SIGTERM/SIGINT, how long open calls may take to finish before
    /// the gateway exits anyway, in milliseconds.
    #[arg(long, env = "STREAMGATE_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

impl ServeConfig {
    /// The configuration with every default, for embedding and tests.
    pub fn defaults() -> ServeConfig {
        match Cli::parse_from(["streamgate", "serve"]).command {
            Command::Serve(config) => config,
        }
    }

    /// Broker options derived from the flags.
    pub fn broker_options(&self) -> BrokerOptions {
        let timeout = Duration::from_millis(self.redis_timeout_ms);
        BrokerOptions {
            url: self.redis_url.clone(),
            key_prefix: self.key_prefix.clone(),
            response_timeout: timeout,
            connect_timeout: timeout,
            dedup_window: Duration::from_millis(self.dedup_window_ms),
        }
    }

    /// Request defaults and limits derived from the flags.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            default_max_len: self.max_len,
            default_batch_size: self.batch_size,
            max_batch_size: self.max_batch_size,
            max_produce_events: usize::try_from(self.max_produce_events).unwrap_or(usize::MAX),
            block: Duration::from_millis(self.block_ms),
            default_heartbeat: Duration::from_millis(u64::from(self.heartbeat_ms)),
        }
    }
}
