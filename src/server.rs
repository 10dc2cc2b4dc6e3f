//! Wires the gateway together: Redis connection, gRPC services, reflection,
//! health, metrics, and graceful shutdown. Takes plain [`Settings`]; the
//! command line is the binary's business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::{Context, EventStreamService, StreamAdminService};
use crate::auth::{self, Auth, Authenticate};
use crate::broker::Broker;
use crate::config::Settings;
use crate::doorbell::{Doorbell, WakeupGauges};
use crate::group_ops::GroupOps;
use crate::limits::{BudgetMetrics, ByteBudget, ReadingLayer};
use crate::local::LocalGrpc;
use crate::metrics::{self, Metrics, RpcMetricsLayer, WakeupLabels};
use crate::ownership::Owners;
use crate::pb::{
    self, event_stream_server::EventStreamServer, stream_admin_server::StreamAdminServer,
};
use crate::shutdown::Shutdown;
use crate::subscription::GroupSignals;

/// HTTP/2 receive window of a whole client connection, in bytes.
///
/// h2 guards against floods of tiny DATA frames with a budget per
/// connection of half this window: every small frame received counts
/// against it until the handler has read it. A connection that carries many
/// calls with small messages (a service fleet's subscriptions, unary
/// Produce at a high rate, a ProduceStream) can have thousands of them
/// read off the socket in one burst when the client or the gateway briefly
/// falls behind; with hyper's 1 MiB default the budget ran out at ~3,000
/// and h2 closed the whole connection with `GOAWAY ENHANCE_YOUR_CALM
/// (too_many_data_frames)`, taking every subscription on it down. 16 MiB
/// makes that budget ~50,000 frames, far beyond what flow control lets one
/// stream queue (its window stays at the 1 MiB default), at no memory cost
/// unless a client really sends that much unread data.
const HTTP2_CONNECTION_WINDOW: u32 = 16 << 20;

/// Streams one client connection may have open at once, beyond its
/// long-lived subscriptions: room for that many calls in flight.
const CALLS_PER_CONNECTION: u32 = 1024;

/// SETTINGS_MAX_CONCURRENT_STREAMS: every subscription a connection may
/// hold plus [`CALLS_PER_CONNECTION`]. Unbounded (tonic's default), a client
/// starting 10,000 calls at once had them all accepted, each with a small
/// DATA frame waiting for its handler, enough to exhaust the small-frame
/// budget above; bounded, a client's excess calls wait on its side for a
/// free stream instead of costing every call on the connection.
fn max_concurrent_streams(config: &Settings) -> u32 {
    u32::try_from(config.max_subscriptions_per_connection)
        .unwrap_or(u32::MAX)
        .saturating_add(CALLS_PER_CONNECTION)
}

/// Why the gateway could not start or stopped with an error.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    auth_enabled: bool,
    local: LocalGrpc,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The background tasks (health watcher, metrics poller and endpoint,
    /// SIGHUP reload, and whatever the services spawn): all watch
    /// `shutdown`.
    tasks: TaskTracker,
}

impl Gateway {
    /// The address the gRPC server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the `/metrics` endpoint, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The gateway's own gRPC services, callable in-process with the full
    /// request path (metrics, limits, authentication, handlers) but no
    /// network.
    pub fn local(&self) -> LocalGrpc {
        self.local.clone()
    }

    /// Whether callers need a token (`auth_config`).
    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled
    }

    /// The signal that ends the gateway; other long-lived parts (the
    /// dashboard, the demo's consumers) watch it too.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The tracker of the gateway's background tasks: [`Gateway::wait`]
    /// waits for what is spawned on it.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Starts a graceful shutdown: no new connections, open streams end
    /// with UNAVAILABLE, in-flight unary calls finish.
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Waits until the server has stopped and every background task has
    /// ended. A server that fails stops the background tasks too.
    pub async fn wait(self) -> Result<(), StartError> {
        let served = self.task.await;
        self.shutdown.trigger();
        self.tasks.close();
        self.tasks.wait().await;
        served??;
        Ok(())
    }
}

/// Connects to Redis, binds the listener and starts serving in the
/// background: gRPC and `/metrics`, nothing else (the binary adds the
/// dashboard and the demo). Each step below is one function: settings and
/// security, Redis, the listener, metrics, the services and their routes,
/// the layers every call passes, and the server task.
pub async fn start(config: &Settings) -> Result<Gateway, StartError> {
    config.validate()?;
    // Security settings first: a bad file must fail before anything runs.
    crate::tls::install_crypto_provider();
    let auth = config.auth()?;
    let server_tls = config.server_tls()?;
    let broker = Broker::connect(config.broker_options()).await?;
    let incoming = TcpIncoming::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?
        .with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let shutdown = Shutdown::new();
    // Background tasks and every live stream's task share one tracker.
    let tasks = shutdown.tasks().clone();
    let metrics = Arc::new(Metrics::new());
    let metrics_addr = serve_metrics(config, &broker, &metrics, &shutdown).await?;
    let auth_enabled = auth.is_enabled();
    let routes = routes(config, broker, &metrics, auth, &shutdown).await?;
    let reading = reading_layer(config, &metrics);
    let local = LocalGrpc::new(
        routes.clone(),
        RpcMetricsLayer::new(metrics.clone()),
        reading.clone(),
    );
    let mut builder = Server::builder();
    if let Some(tls) = server_tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .max_concurrent_streams(max_concurrent_streams(config))
        // Detect dead peers on long-lived, otherwise silent streams.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Outermost, so that it counts what the layers and interceptors
        // inside refuse as well as what the handlers answer.
        .layer(RpcMetricsLayer::new(metrics))
        .layer(reading)
        .add_routes(routes);
    let signal = shutdown.clone();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move { signal.triggered().await })
            .await
    });
    tracing::info!(%addr, redis = %config.redis_url_for_logs(), prefix = %config.key_prefix,
        tls = config.tls_cert.is_some(), mtls = config.tls_client_ca.is_some(), "streamgate serving");
    Ok(Gateway {
        addr,
        metrics_addr,
        auth_enabled,
        local,
        shutdown,
        task,
        tasks,
    })
}

/// Serves `/metrics` when `metrics_listen` is set, and only then polls
/// the group gauges: they cost Redis work every round.
async fn serve_metrics(
    config: &Settings,
    broker: &Broker,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let tasks = shutdown.tasks();
    let bound = metrics::http::serve(addr, metrics.clone(), shutdown.clone(), tasks)
        .await
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    metrics.enable_polling();
    tasks.spawn(metrics::poll::run(
        broker.clone(),
        metrics.clone(),
        Duration::from_millis(config.metrics_poll_ms),
        shutdown.clone(),
    ));
    Ok(Some(bound))
}

/// Every gRPC service behind its route: health and reflection (no token
/// needed), and the two streamgate services behind authentication. One
/// set of routes serves both the network listener and the in-process
/// callers (the dashboard), behind the same layers, so both get the same
/// metrics, limits, authentication and handlers.
async fn routes(
    config: &Settings,
    broker: Broker,
    metrics: &Arc<Metrics>,
    auth: Auth,
    shutdown: &Shutdown,
) -> Result<Routes, StartError> {
    let tasks = shutdown.tasks();
    let (reporter, health) = tonic_health::server::health_reporter();
    // tonic-health reports SERVING for "" until told otherwise; nothing is
    // served until Redis has answered.
    set_all(&reporter, ServingStatus::NotServing).await;
    tasks.spawn(watch_health(
        broker.clone(),
        reporter,
        metrics.clone(),
        Duration::from_millis(config.health_interval_ms),
        shutdown.clone(),
    ));
    let gauge = |mechanism: &str| {
        metrics
            .wakeup_connections
            .get_or_create(&WakeupLabels {
                mechanism: mechanism.to_owned(),
            })
            .clone()
    };
    let gauges = WakeupGauges {
        tracking: gauge("tracking"),
        xread: gauge("xread"),
    };
    let doorbell = Doorbell::start(
        broker.clone(),
        config.doorbell_options(),
        gauges,
        shutdown.clone(),
    );
    let groups = Arc::new(GroupSignals::default());
    let ctx = Context {
        group_ops: GroupOps::new(broker.clone(), groups.clone(), metrics.acked.clone()),
        broker,
        settings: Arc::new(config.api_settings()),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        groups,
        owners: Arc::new(Owners::new(config.ownership_options(), metrics.clone())),
        doorbell,
        layouts: Arc::default(),
        subscriptions: Arc::new(config.subscription_slots()),
        tasks: tasks.clone(),
    };
    let event_stream = EventStreamService::new(ctx.clone());
    let admin = StreamAdminService::new(ctx);
    tasks.spawn(auth::reload::on_sighup(auth.clone(), shutdown.clone()));
    if !auth.is_enabled() {
        tracing::warn!(
            "authentication is off (no --auth-config): every caller may use every stream"
        );
    }
    let authenticate = Authenticate::new(auth);
    let max_message = config.max_message_bytes();
    Ok(with_reflection(Routes::new(health))?
        .add_service(InterceptedService::new(
            EventStreamServer::new(event_stream).max_decoding_message_size(max_message),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            StreamAdminServer::new(admin).max_decoding_message_size(max_message),
            authenticate,
        )))
}

/// `routes` with server reflection, `v1` and `v1alpha` (grpcurl before
/// 1.9 and many tools speak only the latter), describing the streamgate
/// and health services.
fn with_reflection(routes: Routes) -> Result<Routes, StartError> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// How every call reads its request: `--max-message-bytes` and the byte
/// budget of `--max-buffered-bytes`, reported to `metrics`.
fn reading_layer(config: &Settings, metrics: &Metrics) -> ReadingLayer {
    ReadingLayer::new(
        config.max_message_bytes(),
        ByteBudget::new(
            config.max_buffered_bytes(),
            BudgetMetrics {
                held: metrics.buffered_request_bytes.clone(),
                waiting: metrics.read_pushback_calls.clone(),
                waited: metrics.read_pushback.clone(),
            },
        ),
    )
}

/// Keeps `grpc.health.v1` in step with Redis: SERVING only while Redis
/// answers a PING (a server the gateway refuses, see
/// [`crate::broker::server_info`], fails it), NOT_SERVING from the moment
/// shutdown starts.
async fn watch_health(
    broker: Broker,
    reporter: HealthReporter,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: Shutdown,
) {
    let mut last = None;
    loop {
        let status = match tokio::time::timeout(
            every.max(Duration::from_millis(500)),
            broker.ping(),
        )
        .await
        {
            Ok(Ok(())) => ServingStatus::Serving,
            Ok(Err(e)) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %e, "Redis cannot serve; health is NOT_SERVING");
                }
                ServingStatus::NotServing
            }
            Err(_) => ServingStatus::NotServing,
        };
        metrics
            .redis_up
            .set(i64::from(status == ServingStatus::Serving));
        if last != Some(status) {
            set_all(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = shutdown.triggered() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <EventStreamServer<EventStreamService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter
        .set_service_status(
            <StreamAdminServer<StreamAdminService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
