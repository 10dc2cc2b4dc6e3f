//! Command line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tonic::transport::ServerTlsConfig;

use crate::api::ApiSettings;
use crate::auth::Auth;
use crate::broker::BrokerOptions;
use crate::delivery::LoopSettings;
use crate::limits::{EventLimits, SubscriptionSlots};
use crate::tls::{self, RedisTls};

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

    /// Longest block of the doorbell's XREAD and longest wait of an idle
    /// read loop, in milliseconds: a cancelled subscription stops within
    /// about this long.
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

    /// How long an open Subscribe or Tail rides out a lost Redis connection
    /// (reconnecting with backoff, sending heartbeats) before it ends with
    /// UNAVAILABLE, in milliseconds.
    #[arg(
        long,
        env = "STREAMGATE_REDIS_OUTAGE_GRACE_MS",
        default_value_t = 15_000
    )]
    pub redis_outage_grace_ms: u64,

    /// End a Subscribe, Tail or Replay whose client takes nothing for this
    /// long, in milliseconds; what it read stays pending in Redis.
    #[arg(long, env = "STREAMGATE_CLIENT_STALL_TIMEOUT_MS", default_value_t = 300_000,
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
    #[arg(long, env = "STREAMGATE_MAX_EVENT_FIELDS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_event_fields: u64,

    /// Most bytes in one field of a produced event, name plus value.
    #[arg(long, env = "STREAMGATE_MAX_FIELD_BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_field_bytes: u64,

    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "STREAMGATE_MAX_MESSAGE_BYTES", default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_message_bytes: u64,

    /// Most Subscribe and Tail streams open at once on this gateway.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subscriptions: u64,

    /// Most Subscribe and Tail streams open at once on one client
    /// connection.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subscriptions_per_connection: u64,
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
            tls: RedisTls {
                ca: self.redis_ca.clone(),
                client_cert: self.redis_client_cert.clone(),
                client_key: self.redis_client_key.clone(),
            },
        }
    }

    /// Request defaults and limits derived from the flags.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            default_max_len: self.max_len,
            default_batch_size: self.batch_size,
            max_batch_size: self.max_batch_size,
            max_produce_events: usize::try_from(self.max_produce_events).unwrap_or(usize::MAX),
            loops: LoopSettings {
                block: Duration::from_millis(self.block_ms),
                outage_grace: Duration::from_millis(self.redis_outage_grace_ms),
                stall_timeout: Duration::from_millis(self.client_stall_timeout_ms),
            },
            default_heartbeat: Duration::from_millis(u64::from(self.heartbeat_ms)),
            event_limits: EventLimits {
                max_fields: saturating_usize(self.max_event_fields),
                max_field_bytes: saturating_usize(self.max_field_bytes),
            },
        }
    }

    /// The largest request message the gRPC services decode.
    pub fn max_message_bytes(&self) -> usize {
        saturating_usize(self.max_message_bytes)
    }

    /// The subscription limits.
    pub fn subscription_slots(&self) -> SubscriptionSlots {
        SubscriptionSlots::new(
            saturating_usize(self.max_subscriptions),
            saturating_usize(self.max_subscriptions_per_connection),
        )
    }

    /// Authentication from `--auth-config` and `--allow-anonymous`; off
    /// without a config file.
    pub fn auth(&self) -> Result<Auth, String> {
        match &self.auth_config {
            Some(path) => Auth::from_file(path, self.allow_anonymous),
            None => Ok(Auth::off()),
        }
    }

    /// The gRPC listener's TLS settings; `None` = plaintext.
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, String> {
        tls::server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
        )
    }

    /// `--redis-url` with its password replaced by `***`, fit for logs.
    pub fn redis_url_for_logs(&self) -> String {
        redact_password(&self.redis_url)
    }
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `scheme://user:***@host...` for `scheme://user:password@host...`; the
/// whole user part is hidden when it has no `:` (it may be a password).
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn passwords_never_reach_the_logs() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "rediss://alice:s3cret@h:6380/0",
                "rediss://alice:***@h:6380/0",
            ),
            ("redis://:s3cret@h", "redis://:***@h"),
            ("redis://s3cret@h", "redis://***@h"),
            ("redis://a:p@ss@h/x@y", "redis://a:***@h/x@y"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_password(url), shown);
        }
    }
}
