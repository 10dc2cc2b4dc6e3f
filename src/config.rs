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
use crate::doorbell::DoorbellOptions;
use crate::limits::{EventLimits, SubscriptionSlots};
use crate::ownership::OwnershipOptions;
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

    /// Longest block of the XREAD wake-up (`wakeup: Xread`), and longest
    /// wait of a live stream held back by `max_in_flight` before it reads
    /// again although no ack rang (acks through other gateways); with the
    /// XREAD wake-up also the longest wait of an idle live stream. In
    /// milliseconds. Timers, cancellation and shutdown do not wait for it.
    pub block_ms: u64,

    /// How idle Subscribe, Tail and Consume calls learn of new entries
    /// (see [`Wakeup`]).
    pub wakeup: Wakeup,

    /// With the tracking wake-up: longest wait of an idle live stream
    /// before it reads again although nothing rang, in milliseconds. A
    /// safety net only (a group cursor moved or a group deleted through
    /// another gateway are the changes nothing rings for), so long: each
    /// stream waits between 3/4 of it and all of it, so 10,000 idle
    /// streams cost Redis about 95 reads a second at the default two
    /// minutes.
    pub idle_recheck_ms: u64,

    /// Ordered consumption: how long a partition's lease (and a
    /// consumer's membership) lasts without renewal, in milliseconds. A
    /// gateway that dies holds its partitions that long at most.
    pub partition_lease_ms: u64,

    /// Ordered consumption: how often each ordered subscription renews its
    /// membership and rebalances, in milliseconds. A consumer that joins
    /// or leaves moves partitions within about two of these.
    pub rebalance_interval_ms: u64,

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

    /// How long an open Subscribe, Tail or Consume rides out a lost Redis
    /// connection (reconnecting with backoff, sending heartbeats) before it
    /// ends with UNAVAILABLE, in milliseconds.
    pub redis_outage_grace_ms: u64,

    /// End a Subscribe, Tail, Consume or Replay whose client takes nothing
    /// for this long, in milliseconds; what it read stays pending in Redis.
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

    /// Most fields (text and binary) in one produced event; at most
    /// [`MAX_EVENT_FIELDS_LIMIT`].
    pub max_event_fields: u64,

    /// Most bytes in one field of a produced event, name plus value.
    pub max_field_bytes: u64,

    /// Largest gRPC request message, in bytes.
    pub max_message_bytes: u64,

    /// Request bytes held for calls not yet answered, over the whole
    /// gateway. When they are used up the gateway stops reading client
    /// messages (HTTP/2 flow control pushes back on the clients) until
    /// answers go out, instead of buffering. At least `max_message_bytes`,
    /// so that one whole message always fits.
    pub max_buffered_bytes: u64,

    /// Most Subscribe, Tail and Consume streams open at once on this
    /// gateway.
    pub max_subscriptions: u64,

    /// Most Subscribe, Tail and Consume streams open at once on one client
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
            wakeup: Wakeup::Tracking,
            idle_recheck_ms: 120_000,
            partition_lease_ms: 5000,
            rebalance_interval_ms: 500,
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

/// How idle live streams are woken when their stream gets entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wakeup {
    /// One connection per Redis node with `CLIENT TRACKING on` (RESP3):
    /// reading a stream's length there registers the stream, and its next
    /// write sends one invalidation, whatever the number of streams or
    /// slots. Falls back to [`Wakeup::Xread`], logging why, where the
    /// server refuses it (no RESP3, an ACL without `client|tracking`).
    #[default]
    Tracking,
    /// Blocking `XREAD`s over at most 100 streams each, one connection
    /// each (on a cluster one per slot with idle readers): the wake-up of
    /// streamgate before tracking, for servers without it.
    Xread,
}

/// Longest `idle_recheck_ms`: one hour.
pub const MAX_IDLE_RECHECK_MS: u64 = 3_600_000;

/// Longest `rebalance_interval_ms`: one minute.
pub const MAX_REBALANCE_INTERVAL_MS: u64 = 60_000;

/// Longest `block_ms`: one minute. Longer blocks only delay what waits for
/// them (a read after acks made through another gateway).
pub const MAX_BLOCK_MS: u64 = 60_000;

/// Shortest `metrics_poll_ms`: every round costs Redis work per group.
pub const MIN_METRICS_POLL_MS: u64 = 100;

/// Smallest `max_message_bytes` (and `max_buffered_bytes`): a smaller
/// limit refuses ordinary requests.
pub const MIN_MESSAGE_BYTES: u64 = 1024;

/// Most values Lua's `unpack` returns in Redis' (and Valkey's) Lua 5.1:
/// `unpack` asks `lua_checkstack` for room for its results, which refuses
/// once the C function's stack would pass `LUAI_MAXCSTACK` (8000) slots,
/// the call's own arguments included. `unpack(t, i, j)` holds 3 arguments,
/// so it returns at most 7997 values; measured on Redis 7.0, Valkey 8.1
/// and 9.1 (7996 items pass, 7998 fail with "too many results to
/// unpack").
const LUA_UNPACK_MAX_VALUES: u64 = 8000 - 3;

/// Metadata fields of a dead-letter record (`dlq.stream`, `dlq.id`,
/// `dlq.group`, `dlq.consumer`, `dlq.deliveries`, `dlq.reason`; see
/// `Broker::reclaim`).
const DEAD_LETTER_META_FIELDS: u64 = 6;

/// Room for the reserved fields the gateway writes beside the user's:
/// `type`, `ts_ms` and `partition_key` today, and the ones the v1 contract
/// adds (`traceparent`, `tracestate`), with room to spare.
const RESERVED_FIELDS_ROOM: u64 = 8;

/// Highest `max_event_fields` (`--max-event-fields`): 3984.
///
/// The dead-letter script writes a record with one
/// `XADD dlq * unpack(ARGV, i, j)`: the entry's fields plus
/// [`DEAD_LETTER_META_FIELDS`], two values each, must fit in
/// [`LUA_UNPACK_MAX_VALUES`] (3998 pairs, so an entry may hold 3992 stored
/// fields). An entry above that could never be dead-lettered: the script
/// fails for it on every reclaim round, whoever wrote it. The idempotent
/// Produce script unpacks one XADD's arguments too, which allows 3997
/// stored fields; the dead-letter record is the tighter bound.
pub const MAX_EVENT_FIELDS_LIMIT: u64 =
    LUA_UNPACK_MAX_VALUES / 2 - DEAD_LETTER_META_FIELDS - RESERVED_FIELDS_ROOM;

/// Why [`Settings::validate`] refused the settings: the field, its flag,
/// the value and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {field} (--{}): {reason}", .field.replace('_', "-"))]
pub struct InvalidSetting {
    /// The [`Settings`] field at fault, e.g. `max_event_fields`.
    pub field: &'static str,
    /// The value and the allowed range.
    pub reason: String,
}

/// Checks that `value` of `field` lies in `min..=max` (no upper bound
/// when `max` is `None`).
fn in_range(
    field: &'static str,
    value: u64,
    min: u64,
    max: Option<u64>,
) -> Result<(), InvalidSetting> {
    if value >= min && max.is_none_or(|max| value <= max) {
        return Ok(());
    }
    let allowed = match max {
        Some(max) => format!("{min} to {max}"),
        None => format!("at least {min}"),
    };
    Err(InvalidSetting {
        field,
        reason: format!("{value} is out of range (allowed: {allowed})"),
    })
}

impl Settings {
    /// Refuses settings the gateway cannot serve with; [`crate::server::start`]
    /// calls it first. The command line enforces the same ranges (its
    /// `value_parser`s) for the settings it builds; a program embedding the
    /// library builds [`Settings`] itself and gets them checked here, where
    /// a zero `dedup_window_ms` would otherwise make every idempotent
    /// Produce fail and a huge `max_event_fields` would admit entries the
    /// dead-letter script cannot move. The first refusal names its field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        in_range("block_ms", self.block_ms, 1, Some(MAX_BLOCK_MS))?;
        in_range(
            "idle_recheck_ms",
            self.idle_recheck_ms,
            1,
            Some(MAX_IDLE_RECHECK_MS),
        )?;
        in_range(
            "rebalance_interval_ms",
            self.rebalance_interval_ms,
            1,
            Some(MAX_REBALANCE_INTERVAL_MS),
        )?;
        // Leases are renewed every third of their time, at ticks.
        in_range(
            "partition_lease_ms",
            self.partition_lease_ms,
            3 * self.rebalance_interval_ms,
            None,
        )?;
        in_range("batch_size", u64::from(self.batch_size), 1, None)?;
        in_range("max_batch_size", u64::from(self.max_batch_size), 1, None)?;
        in_range("max_produce_events", self.max_produce_events, 1, None)?;
        in_range("redis_timeout_ms", self.redis_timeout_ms, 1, None)?;
        in_range("dedup_window_ms", self.dedup_window_ms, 1, None)?;
        in_range("health_interval_ms", self.health_interval_ms, 1, None)?;
        in_range(
            "metrics_poll_ms",
            self.metrics_poll_ms,
            MIN_METRICS_POLL_MS,
            None,
        )?;
        in_range(
            "client_stall_timeout_ms",
            self.client_stall_timeout_ms,
            1,
            None,
        )?;
        in_range(
            "max_event_fields",
            self.max_event_fields,
            1,
            Some(MAX_EVENT_FIELDS_LIMIT),
        )?;
        in_range("max_field_bytes", self.max_field_bytes, 1, None)?;
        in_range(
            "max_message_bytes",
            self.max_message_bytes,
            MIN_MESSAGE_BYTES,
            None,
        )?;
        in_range(
            "max_buffered_bytes",
            self.max_buffered_bytes,
            MIN_MESSAGE_BYTES,
            None,
        )?;
        if self.max_buffered_bytes < self.max_message_bytes {
            return Err(InvalidSetting {
                field: "max_buffered_bytes",
                reason: format!(
                    "{} is less than max_message_bytes (--max-message-bytes, {}); the \
                     gateway must be able to hold one whole request message (allowed: at \
                     least {})",
                    self.max_buffered_bytes, self.max_message_bytes, self.max_message_bytes
                ),
            });
        }
        if self.batch_size > self.max_batch_size {
            return Err(InvalidSetting {
                field: "batch_size",
                reason: format!(
                    "{} is more than max_batch_size (--max-batch-size, {}); every Subscribe \
                     that sets no batch size would be refused (allowed: at most {})",
                    self.batch_size, self.max_batch_size, self.max_batch_size
                ),
            });
        }
        in_range("max_subscriptions", self.max_subscriptions, 1, None)?;
        in_range(
            "max_subscriptions_per_connection",
            self.max_subscriptions_per_connection,
            1,
            None,
        )?;
        Ok(())
    }

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
    pub(crate) fn api_settings(&self) -> ApiSettings {
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

    /// How idle live streams are woken.
    pub(crate) fn doorbell_options(&self) -> DoorbellOptions {
        DoorbellOptions {
            wakeup: self.wakeup,
            block: Duration::from_millis(self.block_ms),
            idle_recheck: Duration::from_millis(self.idle_recheck_ms),
        }
    }

    /// Ordered consumption's timing.
    pub(crate) fn ownership_options(&self) -> OwnershipOptions {
        OwnershipOptions {
            lease: Duration::from_millis(self.partition_lease_ms),
            rebalance: Duration::from_millis(self.rebalance_interval_ms),
        }
    }

    /// The largest request message the gRPC services decode.
    pub(crate) fn max_message_bytes(&self) -> usize {
        saturating_usize(self.max_message_bytes)
    }

    /// The byte budget of requests held for calls not yet answered.
    pub(crate) fn max_buffered_bytes(&self) -> usize {
        saturating_usize(self.max_buffered_bytes)
    }

    /// The subscription limits.
    pub(crate) fn subscription_slots(&self) -> SubscriptionSlots {
        SubscriptionSlots::new(
            saturating_usize(self.max_subscriptions),
            saturating_usize(self.max_subscriptions_per_connection),
        )
    }

    /// Authentication from `--auth-config` and `--allow-anonymous`; off
    /// without a config file.
    pub(crate) fn auth(&self) -> Result<Auth, String> {
        match &self.auth_config {
            Some(path) => Auth::from_file(path, self.allow_anonymous),
            None => Ok(Auth::off()),
        }
    }

    /// The gRPC listener's TLS settings; `None` = plaintext.
    pub(crate) fn server_tls(&self) -> Result<Option<ServerTlsConfig>, String> {
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
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    /// The derivation of [`MAX_EVENT_FIELDS_LIMIT`] spelled out: the
    /// largest event's dead-letter record fits one `unpack`, with every
    /// reserved field it may carry.
    #[test]
    fn the_largest_event_fits_a_dead_letter_record() {
        assert_eq!(MAX_EVENT_FIELDS_LIMIT, 3984);
        let stored = MAX_EVENT_FIELDS_LIMIT + RESERVED_FIELDS_ROOM;
        assert!(2 * (stored + DEAD_LETTER_META_FIELDS) <= 8000 - 3);
        assert!(2 * (stored + 1 + DEAD_LETTER_META_FIELDS) > 8000 - 3);
    }

    /// Every refusal names the field, its flag and the allowed range; one
    /// step inside the range is accepted.
    #[test]
    fn each_refusal_names_its_field_and_range() {
        type Set = fn(&mut Settings, u64);
        let cases: [(&str, Set, u64, Option<u64>); 16] = [
            ("block_ms", |s, v| s.block_ms = v, 1, Some(MAX_BLOCK_MS)),
            (
                "idle_recheck_ms",
                |s, v| s.idle_recheck_ms = v,
                1,
                Some(MAX_IDLE_RECHECK_MS),
            ),
            ("batch_size", |s, v| s.batch_size = v as u32, 1, None),
            (
                "max_batch_size",
                |s, v| {
                    s.max_batch_size = v as u32;
                    s.batch_size = 1;
                },
                1,
                None,
            ),
            (
                "max_produce_events",
                |s, v| s.max_produce_events = v,
                1,
                None,
            ),
            ("redis_timeout_ms", |s, v| s.redis_timeout_ms = v, 1, None),
            ("dedup_window_ms", |s, v| s.dedup_window_ms = v, 1, None),
            (
                "health_interval_ms",
                |s, v| s.health_interval_ms = v,
                1,
                None,
            ),
            ("metrics_poll_ms", |s, v| s.metrics_poll_ms = v, 100, None),
            (
                "client_stall_timeout_ms",
                |s, v| s.client_stall_timeout_ms = v,
                1,
                None,
            ),
            (
                "max_event_fields",
                |s, v| s.max_event_fields = v,
                1,
                Some(MAX_EVENT_FIELDS_LIMIT),
            ),
            ("max_field_bytes", |s, v| s.max_field_bytes = v, 1, None),
            (
                "max_message_bytes",
                |s, v| s.max_message_bytes = v,
                1024,
                None,
            ),
            (
                "max_buffered_bytes",
                |s, v| {
                    s.max_buffered_bytes = v;
                    s.max_message_bytes = 1024;
                },
                1024,
                None,
            ),
            ("max_subscriptions", |s, v| s.max_subscriptions = v, 1, None),
            (
                "max_subscriptions_per_connection",
                |s, v| s.max_subscriptions_per_connection = v,
                1,
                None,
            ),
        ];
        for (field, set, min, max) in cases {
            let with = |value| {
                let mut settings = Settings::default();
                set(&mut settings, value);
                settings.validate()
            };
            let flag = format!("--{}", field.replace('_', "-"));
            let allowed = match max {
                Some(max) => format!("allowed: {min} to {max}"),
                None => format!("allowed: at least {min}"),
            };
            let mut refused = vec![min - 1];
            refused.extend(max.map(|max| max + 1));
            for value in refused {
                let err = with(value).expect_err(field);
                assert_eq!(err.field, field);
                let message = err.to_string();
                for part in [field, flag.as_str(), allowed.as_str(), &value.to_string()] {
                    assert!(message.contains(part), "{message:?} lacks {part:?}");
                }
            }
            assert_eq!(with(min), Ok(()), "{field} = {min}");
            if let Some(max) = max {
                assert_eq!(with(max), Ok(()), "{field} = {max}");
            }
        }
    }

    #[test]
    fn a_default_batch_above_the_largest_batch_is_refused_naming_both_flags() {
        let settings = Settings {
            batch_size: 51,
            max_batch_size: 50,
            ..Settings::default()
        };
        let message = settings.validate().unwrap_err().to_string();
        for part in ["--batch-size", "--max-batch-size", "51", "50"] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
        let equal = Settings {
            batch_size: 50,
            ..settings
        };
        assert_eq!(equal.validate(), Ok(()));
    }

    #[test]
    fn buffered_bytes_below_one_message_are_refused_naming_both_flags() {
        let settings = Settings {
            max_message_bytes: 8192,
            max_buffered_bytes: 4096,
            ..Settings::default()
        };
        let message = settings.validate().unwrap_err().to_string();
        for part in [
            "--max-buffered-bytes",
            "--max-message-bytes",
            "4096",
            "8192",
        ] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
        let equal = Settings {
            max_buffered_bytes: 8192,
            ..settings
        };
        assert_eq!(equal.validate(), Ok(()));
    }

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
