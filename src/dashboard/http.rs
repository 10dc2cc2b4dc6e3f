//! The dashboard's HTTP surface: the embedded page, a small JSON API that
//! calls the gateway's own gRPC services for the caller, and the live
//! event stream.
//!
//! Every route that touches stream data makes gRPC calls through
//! [`LocalGrpc`] with the page's `Authorization` header, so the rules are
//! the API's rules: no token, no data (UNAUTHENTICATED); each action needs
//! the permission of the RPC it calls. Errors come back as JSON carrying
//! the gRPC code and message, which the page shows as they are. The token
//! travels only in the header, never in a URL or a cookie, so there is no
//! cookie to ride on (no CSRF) and no token in access logs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tonic::{Code, Status};

use super::{DemoControls, LiveLimits, feed, live, outbox, snapshot};
use crate::local::{LocalGrpc, OnBehalf};
use crate::pb;
use crate::shutdown::Shutdown;

/// Most entries one Replay from the page returns: the page is for looking,
/// bulk reads belong to the API.
const MAX_REPLAY_SHOWN: u64 = 1000;
/// Most events one Produce click may ask for; beyond it the gateway's own
/// `--max-produce-events` check would still apply, this only keeps the
/// request from being built in memory first.
const MAX_PRODUCE_CLICK: u32 = 10_000;

/// What every handler shares.
pub(super) struct App {
    pub local: LocalGrpc,
    pub auth_enabled: bool,
    pub demo: Option<Arc<dyn DemoControls>>,
    pub shutdown: Shutdown,
    /// The gateway's task tracker: live views end before it is done.
    pub tasks: TaskTracker,
    /// One permit per open live view.
    pub live_views: Arc<Semaphore>,
    /// What a live view may hold.
    pub limits: LiveLimits,
}

/// The routes.
pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/api/info", get(info))
        .route("/api/streams", get(streams))
        .route("/api/stream", get(stream))
        .route("/api/live", get(live_events))
        .route("/api/produce", post(produce))
        .route("/api/replay", post(replay))
        .route("/api/trim", post(trim))
        .route("/api/add-consumer", post(add_consumer))
        .route("/api/remove-consumer", post(remove_consumer))
        .route("/api/reclaim", post(reclaim))
        .route("/api/demo/crash", post(demo_crash))
        .route("/api/demo/reset", post(demo_reset))
        .with_state(app)
}

/// An asset response that no cache keeps across gateway upgrades, and
/// that a browser may not run from any other origin's context.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", super::assets::INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", super::assets::APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", super::assets::STYLE_CSS)
}

/// The caller of a dashboard request, as the gRPC services will see it.
pub(super) struct Who(pub OnBehalf);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let authorization = parts
            .headers
            .get(AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Who(OnBehalf {
            authorization,
            peer,
        }))
    }
}

/// A failed call: the gRPC status, shown to the person as it is.
pub(super) struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        ApiError(status)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError(Status::invalid_argument(format!(
            "request body: {}",
            rejection.body_text()
        )))
    }
}

/// A refused or failed call answers like gRPC itself does: HTTP 200 with
/// the status in the answer (the JSON body and a `grpc-status` header).
/// The page shows it to the person; an HTTP error status would instead
/// make the browser log a failed resource load for an ordinary answer
/// such as PERMISSION_DENIED.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = HeaderValue::from(self.0.code() as i32);
        ([("grpc-status", code)], axum::Json(error_json(&self.0))).into_response()
    }
}

/// `{"error": {"code": 5, "status": "NOT_FOUND", "message": "..."}}`.
pub(super) fn error_json(status: &Status) -> Value {
    json!({ "error": {
        "code": status.code() as i32,
        "status": code_name(status.code()),
        "message": status.message(),
    }})
}

/// The canonical upper-case name of a gRPC code, as grpcurl prints it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

type ApiResult = Result<axum::Json<Value>, ApiError>;

/// What the page needs before it has a token: whether it must ask for one,
/// and the demo's fixed setup. No stream data.
async fn info(State(app): State<Arc<App>>) -> axum::Json<Value> {
    axum::Json(json!({
        "auth": app.auth_enabled,
        "demo": app.demo.as_ref().map(|d| d.info()),
    }))
}

#[derive(Deserialize)]
struct CursorQuery {
    #[serde(default)]
    cursor: String,
}

/// One page of ListStreams.
async fn streams(
    State(app): State<Arc<App>>,
    Who(who): Who,
    Query(q): Query<CursorQuery>,
) -> ApiResult {
    let page = app
        .local
        .admin()
        .list_streams(who.request(pb::ListStreamsRequest {
            cursor: q.cursor,
            limit: 0,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(snapshot::streams_json(&page)))
}

#[derive(Deserialize)]
struct StreamQuery {
    stream: Option<String>,
}

/// One stream's snapshot (the same the live view pushes).
async fn stream(
    State(app): State<Arc<App>>,
    Who(who): Who,
    Query(q): Query<StreamQuery>,
) -> ApiResult {
    let name = q.stream.unwrap_or_default();
    let snap = snapshot::stream(&app.local, &who, &name, app.demo.as_deref()).await?;
    Ok(axum::Json(snap))
}

/// The live view: an event stream (SSE format) read with `fetch()`, which,
/// unlike `EventSource`, can send the `Authorization` header. Beyond
/// [`LiveLimits::max_views`] open views the answer is a single `error`
/// event (RESOURCE_EXHAUSTED), on which the page tries again a second
/// later.
async fn live_events(
    State(app): State<Arc<App>>,
    Who(who): Who,
    Query(q): Query<StreamQuery>,
) -> Response {
    let Ok(view) = app.live_views.clone().try_acquire_owned() else {
        let status = Status::resource_exhausted(format!(
            "the dashboard serves at most {} live views at once (close a page; this one \
             tries again every second)",
            app.limits.max_views
        ));
        let mut response = event_stream(Body::from(feed::event("error", &error_json(&status))));
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(status.code() as i32));
        return response;
    };
    let (outbox, sending) = outbox::outbox(app.limits);
    app.tasks
        .clone()
        .spawn(live::run(app, who, q.stream, outbox, view));
    event_stream(Body::from_stream(sending))
}

/// A response carrying `body` as an event stream.
fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Event types the Produce button picks from when none is given, as in
/// the seed's order demo.
const ORDER_TYPES: [&str; 4] = [
    "order.placed",
    "order.paid",
    "order.shipped",
    "order.cancelled",
];

#[derive(Deserialize)]
struct ProduceBody {
    stream: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default, rename = "type")]
    event_type: String,
}

/// `Produce`: `count` events (default 1) of the given type, or a random
/// order type, each with an order ID and an amount.
async fn produce(
    State(app): State<Arc<App>>,
    Who(who): Who,
    body: Result<axum::Json<ProduceBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    let count = body.count.unwrap_or(1);
    if count > MAX_PRODUCE_CLICK {
        return Err(Status::invalid_argument(format!(
            "count: {count} is more than the dashboard sends at once ({MAX_PRODUCE_CLICK})"
        ))
        .into());
    }
    let events = (0..count)
        .map(|_| {
            let event_type = if body.event_type.is_empty() {
                ORDER_TYPES[fastrand::usize(..ORDER_TYPES.len())].to_owned()
            } else {
                body.event_type.clone()
            };
            pb::Event {
                r#type: event_type,
                fields: [
                    (
                        "order_id".to_owned(),
                        format!("o-{}", fastrand::u32(..1_000_000)),
                    ),
                    (
                        "amount".to_owned(),
                        format!("{}.{:02}", fastrand::u32(1..500), fastrand::u32(..100)),
                    ),
                ]
                .into(),
                ..pb::Event::default()
            }
        })
        .collect();
    let ids = app
        .local
        .events()
        .produce(who.request(pb::ProduceRequest {
            stream: body.stream,
            events,
            max_len: None,
            exact: false,
        }))
        .await?
        .into_inner()
        .ids;
    Ok(axum::Json(json!({
        "message": format!("produced {} {}", ids.len(), entry_word(ids.len() as u64)),
        "ids": ids,
    })))
}

/// "entry" for one, "entries" for any other count: the page shows the
/// messages as they are ("produced 1 entry", "trimmed 0 entries").
fn entry_word(n: u64) -> &'static str {
    if n == 1 { "entry" } else { "entries" }
}

#[derive(Deserialize)]
struct ReplayBody {
    stream: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
    #[serde(default)]
    limit: Option<u64>,
}

/// `Replay`: the entries of a range (default the whole stream), oldest
/// first, at most `limit` (default 20).
async fn replay(
    State(app): State<Arc<App>>,
    Who(who): Who,
    body: Result<axum::Json<ReplayBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    let limit = body.limit.unwrap_or(20).clamp(1, MAX_REPLAY_SHOWN);
    let mut pages = app
        .local
        .events()
        .replay(who.request(pb::ReplayRequest {
            stream: body.stream,
            start: body.start,
            end: body.end,
            limit,
            reverse: false,
            page_size: 0,
        }))
        .await?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(page) = pages.message().await? {
        entries.extend(page.entries.iter().map(snapshot::entry_shown));
    }
    Ok(axum::Json(json!({
        "message": format!("replayed {} {}", entries.len(), entry_word(entries.len() as u64)),
        "entries": entries,
    })))
}

#[derive(Deserialize)]
struct TrimBody {
    stream: String,
    max_len: u64,
    /// `approx` (`MAXLEN ~`), `exact` (`MAXLEN =`) or `safe` (exact, but
    /// never an entry some group has not delivered and acknowledged).
    #[serde(default)]
    mode: String,
}

/// `Trim`.
async fn trim(
    State(app): State<Arc<App>>,
    Who(who): Who,
    body: Result<axum::Json<TrimBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    let (exact, safe) = match body.mode.as_str() {
        "" | "approx" => (false, false),
        "exact" => (true, false),
        "safe" => (true, true),
        other => {
            return Err(Status::invalid_argument(format!(
                "mode: {other:?} is not one of approx, exact, safe"
            ))
            .into());
        }
    };
    let trimmed = app
        .local
        .events()
        .trim(who.request(pb::TrimRequest {
            stream: body.stream,
            strategy: Some(pb::trim_request::Strategy::MaxLen(body.max_len)),
            exact,
            limit: 0,
            acked_by_all_groups: safe,
        }))
        .await?
        .into_inner()
        .trimmed;
    Ok(axum::Json(json!({
        "message": format!("trimmed {trimmed} {}", entry_word(trimmed)),
        "trimmed": trimmed,
    })))
}

#[derive(Deserialize)]
struct ConsumerBody {
    stream: String,
    group: String,
    consumer: String,
    #[serde(default)]
    handover_to: String,
    #[serde(default)]
    min_idle_ms: Option<u64>,
}

/// `Add consumer`. In the demo, on the demo stream, a new demo worker that
/// subscribes, processes and acks like the others. Elsewhere the page runs
/// no workers, and the API has no way to make a consumer appear without
/// it taking entries (a consumer exists in Redis once it reads; a Reap
/// that claims nothing does not create it), so the answer says how a
/// consumer joins instead of pretending.
async fn add_consumer(
    State(app): State<Arc<App>>,
    Who(who): Who,
    body: Result<axum::Json<ConsumerBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    let Some(demo) = app.demo.as_ref().filter(|d| d.stream() == body.stream) else {
        return Err(Status::failed_precondition(format!(
            "a consumer joins group {:?} by subscribing as {:?} (Subscribe); the dashboard \
             runs consumers only for the demo stream of `streamgate demo`",
            body.group, body.consumer
        ))
        .into());
    };
    demo.add_consumer(&app.local, &who, &body.group, &body.consumer)
        .await?;
    Ok(axum::Json(json!({
        "message": format!("demo consumer {} joined group {}", body.consumer, body.group),
    })))
}

/// `Remove consumer`, handing its pending entries to `handover_to`. A demo
/// worker stops reading first, so it cannot re-create itself.
async fn remove_consumer(
    State(app): State<Arc<App>>,
    Who(who): Who,
    body: Result<axum::Json<ConsumerBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    if let Some(demo) = app.demo.as_ref().filter(|d| d.stream() == body.stream) {
        demo.stop_consumer(&body.group, &body.consumer).await;
    }
    let removed = app
        .local
        .admin()
        .remove_consumer(who.request(pb::RemoveConsumerRequest {
            stream: body.stream,
            group: body.group.clone(),
            consumer: body.consumer.clone(),
            handover_to: body.handover_to.clone(),
        }))
        .await?
        .into_inner();
    let handed = if removed.handed_over > 0 {
        format!(
            ", {} pending {} handed to {}",
            removed.handed_over,
            entry_word(removed.handed_over),
            body.handover_to
        )
    } else {
        String::new()
    };
    Ok(axum::Json(json!({
        "message": format!("consumer {} removed from group {}{handed}", body.consumer, body.group),
        "handed_over": removed.handed_over,
    })))
}

/// `Reclaim`: Reap (XAUTOCLAIM) of the group's entries idle for at least
/// `min_idle_ms` to the chosen consumer. A demo worker then processes what
/// it was given, so the entries leave the pending list with delivery
/// count 2.
async fn reclaim(
    State(app): State<Arc<App>>,
    Who(who): Who,
    body: Result<axum::Json<ConsumerBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    let min_idle_ms = body
        .min_idle_ms
        .or_else(|| app.demo.as_ref().map(|d| d.claim_min_idle_ms()))
        .unwrap_or(super::DEFAULT_CLAIM_MIN_IDLE_MS);
    let reaped = app
        .local
        .events()
        .reap(who.request(pb::ReapRequest {
            stream: body.stream.clone(),
            group: body.group.clone(),
            consumer: body.consumer.clone(),
            min_idle_ms,
            page_count: 0,
            max_pages: 0,
            start_id: String::new(),
        }))
        .await?
        .into_inner();
    let claimed = reaped.claimed.len();
    let entries: Vec<Value> = reaped.claimed.iter().map(snapshot::entry_shown).collect();
    let handed = match app.demo.as_ref().filter(|d| d.stream() == body.stream) {
        Some(demo) => demo.hand_over(&body.group, &body.consumer, reaped.claimed),
        None => true,
    };
    let busy = if handed {
        String::new()
    } else {
        format!(
            "; {} is not keeping up, so they stay pending for it until the next Reclaim",
            body.consumer
        )
    };
    Ok(axum::Json(json!({
        "message": format!(
            "reclaimed {claimed} {} idle at least {min_idle_ms} ms to {}{busy}",
            entry_word(claimed as u64),
            body.consumer
        ),
        "claimed": entries,
        "deleted_ids": reaped.deleted_ids,
    })))
}

/// The demo's controls exist only in demo mode.
fn demo_of(app: &App) -> Result<&Arc<dyn DemoControls>, ApiError> {
    app.demo.as_ref().ok_or_else(|| {
        ApiError(Status::failed_precondition(
            "demo controls exist only under `streamgate demo`",
        ))
    })
}

#[derive(Deserialize)]
struct CrashBody {
    /// The consumer's group; any group when absent.
    #[serde(default)]
    group: Option<String>,
    consumer: String,
}

/// `Crash next 3`: the demo consumer drops its next three deliveries
/// unacknowledged, as if it crashed while processing them.
async fn demo_crash(
    State(app): State<Arc<App>>,
    body: Result<axum::Json<CrashBody>, JsonRejection>,
) -> ApiResult {
    let axum::Json(body) = body?;
    demo_of(&app)?.crash_next(body.group.as_deref(), &body.consumer, 3)?;
    Ok(axum::Json(json!({
        "message": format!("{} will drop its next 3 deliveries", body.consumer),
    })))
}

/// `Reset demo`: empty stream, fresh groups, the three demo consumers.
async fn demo_reset(State(app): State<Arc<App>>, Who(who): Who) -> ApiResult {
    demo_of(&app)?.reset(&app.local, &who).await?;
    Ok(axum::Json(json!({ "message": "demo reset" })))
}
