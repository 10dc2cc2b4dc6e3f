//! The command line of `streamgate`: flags and their `STREAMGATE_*`
//! environment variables, turned into the library's plain
//! [`Settings`]. Nothing else reads argv or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use streamgate::config::Settings;

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
    Serve(ServeArgs),
}

/// Everything `streamgate serve` takes; every flag also reads an
/// environment variable. Defaults come from [`Settings::default`], so the
/// binary and the library cannot disagree about them.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on; port 0 picks a free port. The bound address
    /// is printed as `listening on ADDR`.
    #[arg(long, env = "STREAMGATE_LISTEN", default_value_t = defaults().listen)]
    pub listen: SocketAddr,

    /// Redis to serve from (`redis://[user:pass@]host:port[/db]`).
    #[arg(
        long,
        env = "STREAMGATE_REDIS_URL",
        default_value_t = defaults().redis_url
    )]
    pub redis_url: String,

    /// Prefix of every Redis key the gateway touches: stream `s` is key
    /// `<prefix>s`.
    #[arg(long, env = "STREAMGATE_KEY_PREFIX", default_value_t = defaults().key_prefix)]
    pub key_prefix: String,

    /// Default approximate length cap (`MAXLEN ~`) applied by Produce; 0
    /// disables it.
    #[arg(long, env = "STREAMGATE_MAX_LEN", default_value_t = defaults().max_len)]
    pub max_len: u64,

    /// Longest block of the doorbell's XREAD and longest wait of an idle
    /// read loop, in milliseconds: a cancelled subscription stops within
    /// about this long.
    #[arg(long, env = "STREAMGATE_BLOCK_MS", default_value_t = defaults().block_ms,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub block_ms: u64,

    /// Subscribe batch size when the request sets none.
    #[arg(long, env = "STREAMGATE_BATCH_SIZE", default_value_t = defaults().batch_size,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Largest batch, page or count a request may ask for.
    #[arg(long, env = "STREAMGATE_MAX_BATCH_SIZE", default_value_t = defaults().max_batch_size,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_size: u32,

    /// Most events in one Produce call.
    #[arg(long, env = "STREAMGATE_MAX_PRODUCE_EVENTS", default_value_t = defaults().max_produce_events,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_produce_events: u64,

    /// How long a Redis command may take before the request fails, in
    /// milliseconds.
    #[arg(long, env = "STREAMGATE_REDIS_TIMEOUT_MS", default_value_t = defaults().redis_timeout_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_timeout_ms: u64,

    /// How long Produce remembers an event's idempotency key, in
    /// milliseconds (default 24 h).
    #[arg(long, env = "STREAMGATE_DEDUP_WINDOW_MS", default_value_t = defaults().dedup_window_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_window_ms: u64,

    /// Subscribe heartbeat interval when the request sets none, in
    /// milliseconds; 0 disables heartbeats by default.
    #[arg(long, env = "STREAMGATE_HEARTBEAT_MS", default_value_t = defaults().heartbeat_ms)]
    pub heartbeat_ms: u32,

    /// How often the health check pings Redis, in milliseconds.
    #[arg(long, env = "STREAMGATE_HEALTH_INTERVAL_MS", default_value_t = defaults().health_interval_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub health_interval_ms: u64,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (off unless set;
    /// port 0 picks a free port, printed as `metrics on ADDR`).
    #[arg(long, env = "STREAMGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often the per-group metrics (lag, pending, oldest pending idle)
    /// are refreshed from Redis, in milliseconds.
    #[arg(long, env = "STREAMGATE_METRICS_POLL_MS", default_value_t = defaults().metrics_poll_ms,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub metrics_poll_ms: u64,

    /// How long an open Subscribe or Tail rides out a lost Redis connection
    /// (reconnecting with backoff, sending heartbeats) before it ends with
    /// UNAVAILABLE, in milliseconds.
    #[arg(
        long,
        env = "STREAMGATE_REDIS_OUTAGE_GRACE_MS",
        default_value_t = defaults().redis_outage_grace_ms
    )]
    pub redis_outage_grace_ms: u64,

    /// End a Subscribe, Tail or Replay whose client takes nothing for this
    /// long, in milliseconds; what it read stays pending in Redis.
    #[arg(long, env = "STREAMGATE_CLIENT_STALL_TIMEOUT_MS", default_value_t = defaults().client_stall_timeout_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub client_stall_timeout_ms: u64,

    /// After SIGTERM/SIGINT, how long open calls may take to finish before
    /// the gateway exits anyway, in milliseconds.
    #[arg(long, env = "STREAMGATE_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Serve gRPC over TLS with this certificate chain (PEM); needs
    /// `--tls-key`.
    #[arg(long, env = "STREAMGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "STREAMGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "STREAMGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// CA certificate (PEM) that Redis' certificate must chain to, for a
    /// `rediss://` URL; without it the system trust store is used.
    #[arg(long, env = "STREAMGATE_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,

    /// Client certificate (PEM) presented to a `rediss://` Redis that
    /// verifies clients; needs `--redis-client-key`.
    #[arg(long, env = "STREAMGATE_REDIS_CLIENT_CERT")]
    pub redis_client_cert: Option<PathBuf>,

    /// Private key (PEM) of `--redis-client-cert`.
    #[arg(long, env = "STREAMGATE_REDIS_CLIENT_KEY")]
    pub redis_client_key: Option<PathBuf>,

    /// Bearer tokens and their grants (TOML). Without it authentication
    /// is off and every caller may do everything. Reloaded on SIGHUP.
    #[arg(long, env = "STREAMGATE_AUTH_CONFIG")]
    pub auth_config: Option<PathBuf>,

    /// With `--auth-config`: let callers without a token in, with the
    /// grants of the file's `[anonymous]` table (none if it has none).
    #[arg(long, env = "STREAMGATE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Most fields (text and binary) in one produced event.
    #[arg(long, env = "STREAMGATE_MAX_EVENT_FIELDS", default_value_t = defaults().max_event_fields,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_event_fields: u64,

    /// Most bytes in one field of a produced event, name plus value.
    #[arg(long, env = "STREAMGATE_MAX_FIELD_BYTES", default_value_t = defaults().max_field_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_field_bytes: u64,

    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "STREAMGATE_MAX_MESSAGE_BYTES", default_value_t = defaults().max_message_bytes,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_message_bytes: u64,

    /// Most Subscribe and Tail streams open at once on this gateway.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS", default_value_t = defaults().max_subscriptions,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subscriptions: u64,

    /// Most Subscribe and Tail streams open at once on one client
    /// connection.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = defaults().max_subscriptions_per_connection,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subscriptions_per_connection: u64,
}

/// The defaults every flag shows and falls back to.
fn defaults() -> Settings {
    Settings::default()
}

impl From<ServeArgs> for Settings {
    fn from(args: ServeArgs) -> Settings {
        Settings {
            listen: args.listen,
            redis_url: args.redis_url,
            key_prefix: args.key_prefix,
            max_len: args.max_len,
            block_ms: args.block_ms,
            batch_size: args.batch_size,
            max_batch_size: args.max_batch_size,
            max_produce_events: args.max_produce_events,
            redis_timeout_ms: args.redis_timeout_ms,
            dedup_window_ms: args.dedup_window_ms,
            heartbeat_ms: args.heartbeat_ms,
            health_interval_ms: args.health_interval_ms,
            metrics_listen: args.metrics_listen,
            metrics_poll_ms: args.metrics_poll_ms,
            redis_outage_grace_ms: args.redis_outage_grace_ms,
            client_stall_timeout_ms: args.client_stall_timeout_ms,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            tls_client_ca: args.tls_client_ca,
            redis_ca: args.redis_ca,
            redis_client_cert: args.redis_client_cert,
            redis_client_key: args.redis_client_key,
            auth_config: args.auth_config,
            allow_anonymous: args.allow_anonymous,
            max_event_fields: args.max_event_fields,
            max_field_bytes: args.max_field_bytes,
            max_message_bytes: args.max_message_bytes,
            max_subscriptions: args.max_subscriptions,
            max_subscriptions_per_connection: args.max_subscriptions_per_connection,
        }
    }
}
