//! The gateway's settings: plain values with the defaults of
//! `streamgate serve`. The library never reads the command line or the
//! environment (the binary turns its flags into [`Settings`]), so an
//! embedding program or a test gets exactly the settings it builds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::ServerTlsConfig;

use crate::api::ApiSettings;
use crate::auth::Auth;
use crate::broker::BrokerOptions;
use crate::delivery::LoopSettings;
use crate::limits::{EventLimits, SubscriptionSlots};
use crate::tls::{self, RedisTls};

/// Everything [`crate::server::start`] needs. Plain values: build them in
/// code (`Settings { key_prefix: "app:".into(), ..Settings::default() }`);
/// the `streamgate` binary builds them from its flags, each of which is
/// named after its field (`--key-prefix`, `STREAMGATE_KEY_PREFIX`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to serve gRPC on; port 0 picks a free port. The bound address
    /// is printed as `listening on ADDR`.
    pub listen: SocketAddr,

    /// Redis to serve from (`redis://[user:pass@]host:port[/db]`); with
    /// `redis_cluster`, one or more comma-separated seed node URLs.
    pub redis_url: String,

    /// Speak Redis Cluster: discover the topology from the seed URLs, route
    /// every command by slot, follow MOVED/ASK and refresh the slot map on
    /// failover and resharding.
    pub redis_cluster: bool,

    /// Prefix of every Redis key the gateway touches: stream `s` is key
    /// `<prefix>s`.
    pub key_prefix: String,

    /// Default approximate length cap (`MAXLEN ~`) applied by Produce; 0
    /// disables it.
    pub max_len: u64,

    /// Longest block of the doorbell's XREAD, and longest wait of an idle
    /// live stream before it reads again although nothing rang (acks
    /// through other gateways), in milliseconds. Timers, cancellation and
    /// shutdown do not wait for it.
    pub block_ms: u64,

    /// Subscribe batch size when the request sets none.
    pub batch_size: u32,

    /// Largest batch, page or count a request may ask for.
    pub max_batch_size: u32,

    /// Most events in one Produce call.
    pub max_produce_events: u64,

    /// How long a Redis command may take before the request fails, in
    /// milliseconds.
    pub redis_timeout_ms: u64,

    /// How long Produce remembers an event's idempotency key, in
    /// milliseconds (default 24 h).
    pub dedup_window_ms: u64,

    /// Produce answers only once this many replicas hold the write (Redis
    /// WAIT, bounded by `redis_timeout_ms`); 0 answers as soon as the
    /// master has it.
    pub produce_wait_replicas: u32,

    /// Subscribe heartbeat interval when the request sets none, in
    /// milliseconds; 0 disables heartbeats by default.
    pub heartbeat_ms: u32,

    /// How often the health check pings Redis, in milliseconds.
    pub health_interval_ms: u64,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (off unless set;
    /// port 0 picks a free port, printed as `metrics on ADDR`).
    pub metrics_listen: Option<SocketAddr>,

    /// How often the per-group metrics (lag, pending, oldest pending idle)
    /// are refreshed from Redis, in milliseconds.
    pub metrics_poll_ms: u64,

    /// Serve the live dashboard at `http://ADDR/` (off unless set; port 0
    /// picks a free port, printed as `dashboard on http://ADDR/`). It calls
    /// the gateway's own services, so `auth_config` applies to it too.
    pub http_listen: Option<SocketAddr>,

    /// How long an open Subscribe or Tail rides out a lost Redis connection
    /// (reconnecting with backoff, sending heartbeats) before it ends with
    /// UNAVAILABLE, in milliseconds.
    pub redis_outage_grace_ms: u64,

    /// End a Subscribe, Tail or Replay whose client takes nothing for this
    /// long, in milliseconds; what it read stays pending in Redis.
    pub client_stall_timeout_ms: u64,

    /// Serve gRPC over TLS with this certificate chain (PEM); needs
    /// `--tls-key`.
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    pub tls_client_ca: Option<PathBuf>,

    /// CA certificate (PEM) that Redis' certificate must chain to, for a
    /// `rediss://` URL; without it the system trust store is used.
    pub redis_ca: Option<PathBuf>,

    /// Client certificate (PEM) presented to a `rediss://` Redis that
    /// verifies clients; needs `--redis-client-key`.
    pub redis_client_cert: Option<PathBuf>,

    /// Private key (PEM) of `--redis-client-cert`.
    pub redis_client_key: Option<PathBuf>,

    /// Bearer tokens and their grants (TOML). Without it authentication
    /// is off and every caller may do everything. Reloaded on SIGHUP.
    pub auth_config: Option<PathBuf>,

    /// With `--auth-config`: let callers without a token in, with the
    /// grants of the file's `[anonymous]` table (none if it has none).
    pub allow_anonymous: bool,

    /// Most fields (text and binary) in one produced event.
    pub max_event_fields: u64,

    /// Most bytes in one field of a produced event, name plus value.
    pub max_field_bytes: u64,

    /// Largest gRPC request message, in bytes.
    pub max_message_bytes: u64,

    /// Request bytes held for calls not yet answered, over the whole
    /// gateway. When they are used up the gateway stops reading client
    /// messages (HTTP/2 flow control pushes back on the clients) until
    /// answers go out, instead of buffering.
    pub max_buffered_bytes: u64,

    /// Most Subscribe and Tail streams open at once on this gateway.
    pub max_subscriptions: u64,

    /// Most Subscribe and Tail streams open at once on one client
    /// connection.
    pub max_subscriptions_per_connection: u64,
}

impl Default for Settings {
    /// The defaults of `streamgate serve`.
    fn default() -> Settings {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_cluster: false,
            key_prefix: String::new(),
            max_len: 10_000,
            block_ms: 1000,
            batch_size: 10,
            max_batch_size: 10_000,
            max_produce_events: 10_000,
            redis_timeout_ms: 5000,
            dedup_window_ms: 86_400_000,
            produce_wait_replicas: 0,
            heartbeat_ms: 15_000,
            health_interval_ms: 1000,
            metrics_listen: None,
            metrics_poll_ms: 5000,
            http_listen: None,
            redis_outage_grace_ms: 15_000,
            client_stall_timeout_ms: 300_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            redis_ca: None,
            redis_client_cert: None,
            redis_client_key: None,
            auth_config: None,
            allow_anonymous: false,
            max_event_fields: 1024,
            max_field_bytes: 1 << 20,
            max_message_bytes: 4 << 20,
            max_buffered_bytes: 256 << 20,
            max_subscriptions: 5000,
            max_subscriptions_per_connection: 200,
        }
    }
}

impl Settings {
    /// Broker options derived from the flags.
    pub fn broker_options(&self) -> BrokerOptions {
        let timeout = Duration::from_millis(self.redis_timeout_ms);
        BrokerOptions {
            url: self.redis_url.clone(),
            cluster: self.redis_cluster,
            key_prefix: self.key_prefix.clone(),
            response_timeout: timeout,
            connect_timeout: timeout,
            dedup_window: Duration::from_millis(self.dedup_window_ms),
            wait_replicas: self.produce_wait_replicas,
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

    /// The byte budget of requests held for calls not yet answered.
    pub fn max_buffered_bytes(&self) -> usize {
        saturating_usize(self.max_buffered_bytes)
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
    /// Each comma-separated seed URL of a cluster is redacted alike.
    pub fn redis_url_for_logs(&self) -> String {
        self.redis_url
            .split(',')
            .map(redact_password)
            .collect::<Vec<_>>()
            .join(",")
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
