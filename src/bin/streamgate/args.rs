//! The command line of `streamgate`: flags and their `STREAMGATE_*`
//! environment variables, turned into the library's plain
//! [`Settings`]. Nothing else reads argv or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use streamgate::config::{
    MAX_BLOCK_MS, MAX_EVENT_FIELDS_LIMIT, MAX_IDLE_RECHECK_MS, MAX_REBALANCE_INTERVAL_MS,
    MIN_MESSAGE_BYTES, MIN_METRICS_POLL_MS, Settings, Wakeup,
};
use streamgate::demo::DemoSettings;

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
    Serve(Box<ServeArgs>),
    /// Run the order demo: the gateway, the dashboard and demo consumers
    /// (`worker-a`, `worker-b` in group `notifications`, `worker-c` in
    /// `analytics`) on one stream.
    Demo(DemoArgs),
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

    /// Redis to serve from (`redis://[user:pass@]host:port[/db]`); with
    /// `--redis-cluster`, one or more comma-separated seed node URLs.
    #[arg(
        long,
        env = "STREAMGATE_REDIS_URL",
        default_value_t = defaults().redis_url
    )]
    pub redis_url: String,

    /// Speak Redis Cluster: discover the topology from the seed URLs of
    /// `--redis-url` and route every command by slot.
    #[arg(long, env = "STREAMGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Prefix of every Redis key the gateway touches: stream `s` is key
    /// `<prefix>s`.
    #[arg(long, env = "STREAMGATE_KEY_PREFIX", default_value_t = defaults().key_prefix)]
    pub key_prefix: String,

    /// Default approximate length cap (`MAXLEN ~`) applied by Produce; 0
    /// disables it.
    #[arg(long, env = "STREAMGATE_MAX_LEN", default_value_t = defaults().max_len)]
    pub max_len: u64,

    /// Longest block of the XREAD wake-up, and longest wait of a live
    /// stream held back by max_in_flight before it reads again although no
    /// ack rang (acks through other gateways); with `--wakeup xread` also
    /// the longest wait of an idle live stream. In milliseconds.
    #[arg(long, env = "STREAMGATE_BLOCK_MS", default_value_t = defaults().block_ms,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BLOCK_MS))]
    pub block_ms: u64,

    /// How idle Subscribe, Tail and Consume calls learn of new entries:
    /// `tracking` watches every idle stream of a Redis node over one
    /// connection (CLIENT TRACKING) and falls back to `xread`, saying why,
    /// where the server refuses it; `xread` blocks in XREADs over up to
    /// 100 streams each.
    #[arg(long, env = "STREAMGATE_WAKEUP", value_enum, default_value_t = WakeupArg::Tracking)]
    pub wakeup: WakeupArg,

    /// With `--wakeup tracking`: longest wait of an idle live stream before
    /// it reads again although nothing rang (a safety net), in
    /// milliseconds.
    #[arg(long, env = "STREAMGATE_IDLE_RECHECK_MS", default_value_t = defaults().idle_recheck_ms,
          value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_RECHECK_MS))]
    pub idle_recheck_ms: u64,

    /// Ordered consumption: how long a partition's lease (and a consumer's
    /// membership) lasts without renewal, in milliseconds: how long a dead
    /// gateway's partitions stay unowned. At least three rebalance
    /// intervals.
    #[arg(long, env = "STREAMGATE_PARTITION_LEASE_MS", default_value_t = defaults().partition_lease_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub partition_lease_ms: u64,

    /// Ordered consumption: how often each ordered subscription renews its
    /// membership and rebalances, in milliseconds.
    #[arg(long, env = "STREAMGATE_REBALANCE_INTERVAL_MS", default_value_t = defaults().rebalance_interval_ms,
          value_parser = clap::value_parser!(u64).range(1..=MAX_REBALANCE_INTERVAL_MS))]
    pub rebalance_interval_ms: u64,

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
    /// milliseconds (default 24 h); also how long a dead-letter marker
    /// guards against writing a record twice.
    #[arg(long, env = "STREAMGATE_DEDUP_WINDOW_MS", default_value_t = defaults().dedup_window_ms,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dedup_window_ms: u64,

    /// Produce answers only once this many replicas hold the write (Redis
    /// WAIT, bounded by --redis-timeout-ms); when fewer confirm in time the
    /// answer is UNAVAILABLE and a retry with the same idempotency keys
    /// writes nothing twice. 0: answer once the master has it.
    #[arg(long, env = "STREAMGATE_PRODUCE_WAIT_REPLICAS", default_value_t = defaults().produce_wait_replicas)]
    pub produce_wait_replicas: u32,

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
          value_parser = clap::value_parser!(u64).range(MIN_METRICS_POLL_MS..))]
    pub metrics_poll_ms: u64,

    /// Serve the live dashboard at `http://ADDR/` (off unless set; port 0
    /// picks a free port, printed as `dashboard on http://ADDR/`). It calls
    /// the gateway's own services, so `--auth-config` applies to it too.
    #[arg(long, env = "STREAMGATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// How long an open Subscribe, Tail or Consume rides out a lost Redis
    /// connection (reconnecting with backoff, sending heartbeats) before it
    /// ends with UNAVAILABLE, in milliseconds.
    #[arg(
        long,
        env = "STREAMGATE_REDIS_OUTAGE_GRACE_MS",
        default_value_t = defaults().redis_outage_grace_ms
    )]
    pub redis_outage_grace_ms: u64,

    /// End a Subscribe, Tail, Consume or Replay whose client takes nothing
    /// for this long, in milliseconds; what it read stays pending in Redis.
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

    /// Most fields (text and binary) in one produced event. At most 3984:
    /// an entry's dead-letter record is written by one Lua `unpack`, which
    /// returns at most 7997 values in Redis' Lua.
    #[arg(long, env = "STREAMGATE_MAX_EVENT_FIELDS", default_value_t = defaults().max_event_fields,
          value_parser = clap::value_parser!(u64).range(1..=MAX_EVENT_FIELDS_LIMIT))]
    pub max_event_fields: u64,

    /// Most bytes in one field of a produced event, name plus value.
    #[arg(long, env = "STREAMGATE_MAX_FIELD_BYTES", default_value_t = defaults().max_field_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_field_bytes: u64,

    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "STREAMGATE_MAX_MESSAGE_BYTES", default_value_t = defaults().max_message_bytes,
          value_parser = clap::value_parser!(u64).range(MIN_MESSAGE_BYTES..))]
    pub max_message_bytes: u64,

    /// Request bytes held for calls not yet answered, over the whole
    /// gateway; when used up, the gateway stops reading from clients
    /// (HTTP/2 flow control pushes back) until answers go out. At least
    /// --max-message-bytes.
    #[arg(long, env = "STREAMGATE_MAX_BUFFERED_BYTES", default_value_t = defaults().max_buffered_bytes,
          value_parser = clap::value_parser!(u64).range(MIN_MESSAGE_BYTES..))]
    pub max_buffered_bytes: u64,

    /// Most Subscribe, Tail and Consume streams open at once on this
    /// gateway.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS", default_value_t = defaults().max_subscriptions,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subscriptions: u64,

    /// Most Subscribe, Tail and Consume streams open at once on one client
    /// connection.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = defaults().max_subscriptions_per_connection,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subscriptions_per_connection: u64,
}

/// The defaults every flag shows and falls back to.
fn defaults() -> Settings {
    Settings::default()
}

/// Everything `streamgate demo` takes.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Address to serve gRPC on (the demo consumers connect to it too).
    #[arg(long, env = "STREAMGATE_LISTEN", default_value_t = demo_defaults().listen)]
    pub listen: SocketAddr,

    /// Address of the dashboard, the page the demo is watched and steered
    /// from.
    #[arg(long, env = "STREAMGATE_HTTP_LISTEN", default_value_t = demo_defaults().http_listen)]
    pub http_listen: SocketAddr,

    /// Redis to run the demo on.
    #[arg(long, env = "STREAMGATE_REDIS_URL", default_value_t = demo_defaults().redis_url)]
    pub redis_url: String,

    /// Keep the stream and groups as they are instead of starting from an
    /// empty stream.
    #[arg(long)]
    pub no_reset: bool,

    /// The demo stream.
    #[arg(long, default_value_t = demo_defaults().stream_key)]
    pub stream_key: String,

    /// `Reclaim` takes entries idle at least this long, in milliseconds.
    #[arg(long, default_value_t = demo_defaults().claim_min_idle_ms)]
    pub claim_min_idle_ms: u64,
}

/// The demo's defaults.
fn demo_defaults() -> DemoSettings {
    DemoSettings::default()
}

impl From<DemoArgs> for DemoSettings {
    fn from(args: DemoArgs) -> DemoSettings {
        DemoSettings {
            listen: args.listen,
            http_listen: args.http_listen,
            redis_url: args.redis_url,
            no_reset: args.no_reset,
            stream_key: args.stream_key,
            claim_min_idle_ms: args.claim_min_idle_ms,
        }
    }
}

/// `--wakeup`: the command-line names of [`Wakeup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WakeupArg {
    /// CLIENT TRACKING, one connection per Redis node.
    Tracking,
    /// Blocking XREADs over up to 100 streams each.
    Xread,
}

impl From<WakeupArg> for Wakeup {
    fn from(arg: WakeupArg) -> Wakeup {
        match arg {
            WakeupArg::Tracking => Wakeup::Tracking,
            WakeupArg::Xread => Wakeup::Xread,
        }
    }
}

impl From<ServeArgs> for Settings {
    fn from(args: ServeArgs) -> Settings {
        Settings {
            listen: args.listen,
            redis_url: args.redis_url,
            redis_cluster: args.redis_cluster,
            key_prefix: args.key_prefix,
            max_len: args.max_len,
            block_ms: args.block_ms,
            wakeup: args.wakeup.into(),
            idle_recheck_ms: args.idle_recheck_ms,
            partition_lease_ms: args.partition_lease_ms,
            rebalance_interval_ms: args.rebalance_interval_ms,
            batch_size: args.batch_size,
            max_batch_size: args.max_batch_size,
            max_produce_events: args.max_produce_events,
            redis_timeout_ms: args.redis_timeout_ms,
            dedup_window_ms: args.dedup_window_ms,
            produce_wait_replicas: args.produce_wait_replicas,
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
            max_buffered_bytes: args.max_buffered_bytes,
            max_subscriptions: args.max_subscriptions,
            max_subscriptions_per_connection: args.max_subscriptions_per_connection,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_has_its_environment_variable() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for arg in serve.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            if long == "help" {
                continue;
            }
            let env = format!("STREAMGATE_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env.as_str()),
                "--{long}"
            );
        }
    }

    /// Every flag set on the command line (which wins over the
    /// environment, so this holds in any shell) lands in its field.
    #[test]
    fn every_flag_reaches_its_setting() {
        let argv = [
            "streamgate",
            "serve",
            "--listen=127.0.0.1:1",
            "--redis-url=redis://r:2",
            "--key-prefix=p:",
            "--max-len=3",
            "--block-ms=4",
            "--wakeup=xread",
            "--idle-recheck-ms=24",
            "--batch-size=5",
            "--max-batch-size=6",
            "--max-produce-events=7",
            "--redis-timeout-ms=8",
            "--dedup-window-ms=9",
            "--produce-wait-replicas=23",
            "--heartbeat-ms=10",
            "--health-interval-ms=11",
            "--metrics-listen=127.0.0.1:12",
            "--metrics-poll-ms=130",
            "--http-listen=127.0.0.1:22",
            "--redis-outage-grace-ms=14",
            "--client-stall-timeout-ms=15",
            "--shutdown-grace-ms=16",
            "--tls-cert=c",
            "--tls-key=k",
            "--tls-client-ca=ca",
            "--redis-ca=rca",
            "--redis-client-cert=rc",
            "--redis-client-key=rk",
            "--auth-config=a.toml",
            "--allow-anonymous",
            "--max-event-fields=17",
            "--max-field-bytes=18",
            "--max-message-bytes=1900",
            "--max-subscriptions=20",
            "--max-subscriptions-per-connection=21",
        ];
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("parsed `serve`");
        };
        assert_eq!(args.shutdown_grace_ms, 16);
        assert_eq!(args.http_listen, Some("127.0.0.1:22".parse().unwrap()));
        let s = Settings::from(*args);
        assert_eq!(s.produce_wait_replicas, 23);
        assert_eq!((s.wakeup, s.idle_recheck_ms), (Wakeup::Xread, 24));
        let path = |p: &str| Some(PathBuf::from(p));
        assert_eq!(s.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(s.metrics_listen, Some("127.0.0.1:12".parse().unwrap()));
        assert_eq!(
            (s.redis_url.as_str(), s.key_prefix.as_str()),
            ("redis://r:2", "p:")
        );
        assert_eq!(
            [
                s.max_len,
                s.block_ms,
                s.max_produce_events,
                s.redis_timeout_ms
            ],
            [3, 4, 7, 8]
        );
        assert_eq!([s.batch_size, s.max_batch_size, s.heartbeat_ms], [5, 6, 10]);
        assert_eq!(
            [s.dedup_window_ms, s.health_interval_ms, s.metrics_poll_ms],
            [9, 11, 130]
        );
        assert_eq!(
            [s.redis_outage_grace_ms, s.client_stall_timeout_ms],
            [14, 15]
        );
        assert_eq!(
            [s.tls_cert, s.tls_key, s.tls_client_ca],
            [path("c"), path("k"), path("ca")]
        );
        assert_eq!(
            [s.redis_ca, s.redis_client_cert, s.redis_client_key],
            [path("rca"), path("rc"), path("rk")]
        );
        assert_eq!((s.auth_config, s.allow_anonymous), (path("a.toml"), true));
        assert_eq!(
            [s.max_event_fields, s.max_field_bytes, s.max_message_bytes],
            [17, 18, 1900]
        );
        assert_eq!(
            [s.max_subscriptions, s.max_subscriptions_per_connection],
            [20, 21]
        );
    }

    /// Every range the command line enforces is the range
    /// `Settings::validate` enforces for code that builds `Settings`
    /// itself: at each edge both accept, one step beyond both refuse.
    #[test]
    fn the_command_line_and_validate_agree_on_every_range() {
        let ranges: [(&str, u64, Option<u64>); 16] = [
            ("block-ms", 1, Some(60_000)),
            ("idle-recheck-ms", 1, Some(3_600_000)),
            ("batch-size", 1, None),
            ("max-batch-size", 1, None),
            ("max-produce-events", 1, None),
            ("redis-timeout-ms", 1, None),
            ("dedup-window-ms", 1, None),
            ("health-interval-ms", 1, None),
            ("metrics-poll-ms", 100, None),
            ("client-stall-timeout-ms", 1, None),
            ("max-event-fields", 1, Some(3984)),
            ("max-field-bytes", 1, None),
            ("max-message-bytes", 1024, None),
            ("max-buffered-bytes", 1024, None),
            ("max-subscriptions", 1, None),
            ("max-subscriptions-per-connection", 1, None),
        ];
        let parse = |flag: &str, value: u64| {
            let mut argv = vec!["streamgate".to_owned(), "serve".to_owned()];
            if flag != "max-message-bytes" {
                // Small messages, so that the smallest buffer holds one.
                argv.push("--max-message-bytes=1024".to_owned());
            }
            if flag != "batch-size" {
                // A small default batch, so that the smallest largest
                // batch holds it.
                argv.push("--batch-size=1".to_owned());
            }
            argv.push(format!("--{flag}={value}"));
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Serve(args) => Settings::from(*args),
                Command::Demo(_) => panic!("parsed `serve`"),
            })
        };
        for (flag, min, max) in ranges {
            let edges = [Some(min), max];
            for value in edges.into_iter().flatten() {
                let settings =
                    parse(flag, value).unwrap_or_else(|e| panic!("--{flag}={value}: {e}"));
                assert_eq!(settings.validate(), Ok(()), "--{flag}={value}");
            }
            let beyond = [Some(min - 1), max.map(|max| max + 1)];
            for value in beyond.into_iter().flatten() {
                assert!(parse(flag, value).is_err(), "--{flag}={value} parses");
                // The same value set in code: validate names the field.
                let field = flag.replace('-', "_");
                let mut settings = parse(flag, min).unwrap();
                set(&mut settings, &field, value);
                let err = settings.validate().expect_err(flag);
                assert_eq!(err.field, field);
            }
        }
    }

    /// Sets the numeric setting named `field`.
    fn set(s: &mut Settings, field: &str, value: u64) {
        let small = u32::try_from(value).unwrap();
        match field {
            "block_ms" => s.block_ms = value,
            "idle_recheck_ms" => s.idle_recheck_ms = value,
            "batch_size" => s.batch_size = small,
            "max_batch_size" => s.max_batch_size = small,
            "max_produce_events" => s.max_produce_events = value,
            "redis_timeout_ms" => s.redis_timeout_ms = value,
            "dedup_window_ms" => s.dedup_window_ms = value,
            "health_interval_ms" => s.health_interval_ms = value,
            "metrics_poll_ms" => s.metrics_poll_ms = value,
            "client_stall_timeout_ms" => s.client_stall_timeout_ms = value,
            "max_event_fields" => s.max_event_fields = value,
            "max_field_bytes" => s.max_field_bytes = value,
            "max_message_bytes" => s.max_message_bytes = value,
            "max_buffered_bytes" => s.max_buffered_bytes = value,
            "max_subscriptions" => s.max_subscriptions = value,
            "max_subscriptions_per_connection" => s.max_subscriptions_per_connection = value,
            other => panic!("no numeric setting {other}"),
        }
    }

    /// clap cannot compare two flags; `server::start` refuses the pair
    /// through `Settings::validate` and the binary prints that message.
    #[test]
    fn buffered_bytes_below_message_bytes_parse_but_do_not_validate() {
        let argv = [
            "streamgate",
            "serve",
            "--max-message-bytes=8192",
            "--max-buffered-bytes=4096",
        ];
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("parsed `serve`");
        };
        let message = Settings::from(*args).validate().unwrap_err().to_string();
        assert!(
            message.contains("--max-buffered-bytes") && message.contains("--max-message-bytes"),
            "{message}"
        );
    }

    #[test]
    fn demo_flags_reach_the_demo_settings() {
        let argv = [
            "streamgate",
            "demo",
            "--listen=127.0.0.1:1",
            "--http-listen=127.0.0.1:2",
            "--redis-url=redis://r:3",
            "--no-reset",
            "--stream-key=s",
            "--claim-min-idle-ms=4",
        ];
        let Command::Demo(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("parsed `demo`");
        };
        let d = DemoSettings::from(args);
        assert_eq!(d.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(d.http_listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(
            (d.redis_url.as_str(), d.stream_key.as_str()),
            ("redis://r:3", "s")
        );
        assert_eq!((d.no_reset, d.claim_min_idle_ms), (true, 4));
        let Command::Demo(args) = Cli::try_parse_from(["streamgate", "demo"])
            .expect("parses")
            .command
        else {
            panic!("parsed `demo`");
        };
        let d = DemoSettings::from(args);
        assert_eq!(d.http_listen, "127.0.0.1:8083".parse().unwrap());
        assert_eq!(d.stream_key, "demo:events:orders");
        assert_eq!(d.claim_min_idle_ms, 5000);
        assert_eq!(d.gateway_settings().max_len, 2000);
    }
}
