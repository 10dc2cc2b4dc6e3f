//! `streamgate.v1.EventStream`: the data plane.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::partitioned_admin::{check_id, check_ids};
use super::partitioned_replay::Bounds;
use super::{Caller, Context, bounded, convert, redis_int, required};
use crate::auth::Permission;
use crate::broker::{Cap, Holder, ReapSpec, TrimTo, now_ms};
use crate::error::{Error, Result};
use crate::group_ops::nack_delay;
use crate::ids::{GroupStart, StreamId};
use crate::metrics::OpenGuard;
use crate::model::{Event, Push};
use crate::namespace;
use crate::pb::{
    self, event_stream_server::EventStream, subscribe_response, tail_response, trim_request,
};
use crate::replay::ReplaySpec;
use crate::subscription::{self, ReclaimOptions, SubscribeSpec};
use crate::tail::{self, TailSpec};

/// A Produce request, validated and authorized.
pub(super) struct Append {
    /// The client's stream name.
    pub stream: String,
    pub events: Vec<Event>,
    pub cap: Option<Cap>,
}

/// A server stream as tonic wants it.
pub(super) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Default entries examined per XAUTOCLAIM page.
const DEFAULT_REAP_PAGE_COUNT: u32 = 100;
/// Default XAUTOCLAIM pages per Reap.
const DEFAULT_REAP_MAX_PAGES: u32 = 10;
/// Default Replay page size.
const DEFAULT_REPLAY_PAGE_SIZE: u32 = 100;

/// Implements the EventStream service.
#[derive(Clone)]
pub struct EventStreamService {
    pub(super) ctx: Context,
}

/// The dead-letter stream of a Subscribe: the requested one, or
/// `<stream>:dlq`. A stream name may be as long as any, so the suffix can
/// take the default over the length limit: that is refused when the
/// request reclaims (only reclaim rounds write dead letters), with a
/// message the client can act on, since it never named the default.
fn dead_letter_stream(stream: &str, requested: String, reclaiming: bool) -> Result<String> {
    const FIELD: &str = "dead_letter_stream";
    if !requested.is_empty() {
        namespace::stream_name(FIELD, &requested)?;
        return Ok(requested);
    }
    let default = format!("{stream}:dlq");
    if reclaiming && namespace::stream_name(FIELD, &default).is_err() {
        return Err(Error::invalid(
            FIELD,
            format!(
                "is empty and the default `<stream>:dlq` would be {} bytes long, over the \
                 limit of {} for stream names: set dead_letter_stream to a shorter name",
                default.len(),
                namespace::MAX_STREAM_NAME_BYTES
            ),
        ));
    }
    Ok(default)
}

impl EventStreamService {
    /// A service answering from `ctx`.
    pub fn new(ctx: Context) -> Self {
        EventStreamService { ctx }
    }
}

/// A push as the proto messages carry it.
pub(super) enum Message {
    /// Entries.
    Batch(pb::Batch),
    /// A heartbeat.
    Heartbeat(pb::Heartbeat),
}

/// Converts a push; `delivered` counts the entries sent.
pub(super) fn message(push: Push, delivered: Option<&Counter>) -> Message {
    match push {
        Push::Entries(entries) => {
            if let Some(counter) = delivered {
                counter.inc_by(entries.len() as u64);
            }
            Message::Batch(pb::Batch {
                entries: convert::entries(entries),
            })
        }
        Push::Heartbeat => Message::Heartbeat(pb::Heartbeat {
            server_time_ms: now_ms(),
        }),
    }
}

impl From<Message> for pb::SubscribeResponse {
    fn from(message: Message) -> Self {
        let kind = match message {
            Message::Batch(batch) => subscribe_response::Kind::Batch(batch),
            Message::Heartbeat(beat) => subscribe_response::Kind::Heartbeat(beat),
        };
        pb::SubscribeResponse { kind: Some(kind) }
    }
}

impl From<Message> for pb::TailResponse {
    fn from(message: Message) -> Self {
        let kind = match message {
            Message::Batch(batch) => tail_response::Kind::Batch(batch),
            Message::Heartbeat(beat) => tail_response::Kind::Heartbeat(beat),
        };
        pb::TailResponse { kind: Some(kind) }
    }
}

impl EventStreamService {
    /// Opens a live stream (Subscribe, Tail, Consume) for `caller`: takes
    /// a subscription slot first, so that a caller over the subscription
    /// limits is refused before `start` touches Redis, then starts the
    /// reading. The slot and one count on the `open` gauge are held for
    /// exactly as long as the response stream lives (tonic drops it when
    /// the client leaves); `respond` turns each item into the rpc's
    /// response message.
    pub(super) async fn live<S, I, T, F>(
        &self,
        caller: &Caller,
        open: &Gauge,
        start: impl FnOnce() -> F,
        mut respond: impl FnMut(I) -> T + Send + 'static,
    ) -> Result<ResponseStream<T>, Status>
    where
        F: Future<Output = Result<S>>,
        S: Stream<Item = Result<I>> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.ctx.subscriptions.acquire(caller.peer)?;
        let items = start().await?;
        let guard = OpenGuard::new(open);
        Ok(Box::pin(items.map(move |item| {
            let _held = (&slot, &guard);
            Ok(respond(item?))
        })))
    }
}

/// Validates the redelivery options of a Subscribe request.
fn reclaim_options(reclaim: Option<pb::Reclaim>) -> Result<Option<ReclaimOptions>> {
    let Some(r) = reclaim else {
        return Ok(None);
    };
    if r.min_idle_ms == 0 {
        return Err(Error::invalid(
            "reclaim.min_idle_ms",
            "must be > 0: entries of live consumers would be taken away at once",
        ));
    }
    redis_int("reclaim.min_idle_ms", r.min_idle_ms)?;
    redis_int("reclaim.interval_ms", r.interval_ms)?;
    let interval_ms = if r.interval_ms == 0 {
        (r.min_idle_ms / 2).max(1)
    } else {
        r.interval_ms
    };
    Ok(Some(ReclaimOptions {
        min_idle_ms: r.min_idle_ms,
        interval: Duration::from_millis(interval_ms),
    }))
}

impl EventStreamService {
    /// Validates and authorizes one Produce request and appends its events;
    /// shared by Produce and ProduceStream. Returns the IDs in order.
    pub(super) async fn produce_one(
        &self,
        caller: &Caller,
        req: pb::ProduceRequest,
    ) -> Result<Vec<String>> {
        let append = self.produce_spec(caller, req)?;
        let ids = self.ctx.append(append).await?;
        self.ctx.metrics.produced.inc_by(ids.len() as u64);
        Ok(ids)
    }

    /// Validates and authorizes one Produce request: what to append.
    pub(super) fn produce_spec(&self, caller: &Caller, req: pb::ProduceRequest) -> Result<Append> {
        let settings = &self.ctx.settings;
        self.ctx.stream(&req.stream)?;
        if req.events.is_empty() {
            return Err(Error::invalid("events", "at least one event is required"));
        }
        if req.events.len() > settings.max_produce_events {
            return Err(Error::LimitExceeded(format!(
                "{} events exceed the limit of {} per Produce (--max-produce-events)",
                req.events.len(),
                settings.max_produce_events
            )));
        }
        let max_len = redis_int("max_len", req.max_len.unwrap_or(settings.default_max_len))?;
        let cap = (max_len > 0).then_some(Cap {
            max_len,
            exact: req.exact,
        });
        let events = req
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let event = convert::event(i, e)?;
                settings.event_limits.check(i, &event)?;
                Ok(event)
            })
            .collect::<Result<Vec<_>>>()?;
        self.ctx
            .authorize(caller, Permission::Produce, &req.stream)?;
        Ok(Append {
            stream: req.stream,
            events,
            cap,
        })
    }

    /// Validates and authorizes a Subscribe request (also the `open` of a
    /// Consume stream).
    pub(super) fn subscribe_spec(
        &self,
        caller: &Caller,
        req: pb::SubscribeRequest,
    ) -> Result<SubscribeSpec> {
        let settings = &self.ctx.settings;
        let reclaiming = req.reclaim.is_some() || (req.ordered && req.max_deliveries > 0);
        let spec = SubscribeSpec {
            stream: self.ctx.stream(&req.stream)?.to_owned(),
            group: required("group", &req.group)?.to_owned(),
            consumer: required("consumer", &req.consumer)?.to_owned(),
            batch_size: settings.batch_size(req.batch_size)?,
            create_group: req.create_group,
            group_start: GroupStart::parse("group_start_id", &req.group_start_id)?,
            pending_first: req.pending_first,
            reclaim: reclaim_options(req.reclaim)?,
            max_deliveries: req.max_deliveries,
            dead_letter_stream: dead_letter_stream(
                &req.stream,
                req.dead_letter_stream,
                reclaiming,
            )?,
            max_in_flight: req.max_in_flight,
            heartbeat: settings.heartbeat(req.heartbeat_ms),
            partitions: 0,
            holder: req.ordered.then(|| Holder::new(&req.consumer)),
            rewinds: None,
        };
        self.ctx
            .authorize(caller, Permission::Consume, &spec.stream)?;
        // Only reclaim rounds and ordered reads write dead letters:
        // appending to the dead-letter stream is a produce there.
        if reclaiming {
            self.ctx
                .authorize(caller, Permission::Produce, &spec.dead_letter_stream)?;
        }
        Ok(spec)
    }
}

#[tonic::async_trait]
impl EventStream for EventStreamService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let ids = self.produce_one(&caller, req).await?;
        Ok(Response::new(pb::ProduceResponse { ids }))
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (caller, req) = Caller::split(request);
        let spec = self.subscribe_spec(&caller, req)?;
        let ctx = &self.ctx;
        let delivered = ctx.metrics.delivered.clone();
        let start = || async move {
            let spec = SubscribeSpec {
                partitions: ctx.partitions(&spec.stream).await?,
                ..spec
            };
            subscription::start(
                ctx.broker.clone(),
                spec,
                ctx.settings.loops,
                (&ctx.groups, &ctx.owners),
                &ctx.doorbell,
                ctx.shutdown.clone(),
            )
            .await
        };
        let respond = move |push| pb::SubscribeResponse::from(message(push, Some(&delivered)));
        let open = &ctx.metrics.open_subscriptions;
        let responses = self.live(&caller, open, start, respond).await?;
        Ok(Response::new(responses))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        check_ids("ids", &req.ids)?;
        self.ctx.authorize(&caller, Permission::Consume, stream)?;
        let acked = self.ctx.ack_ids(stream, group, &req.ids).await?;
        Ok(Response::new(pb::AckResponse { acked }))
    }

    async fn reap(
        &self,
        request: Request<pb::ReapRequest>,
    ) -> Result<Response<pb::ReapResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let max = self.ctx.settings.max_batch_size;
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let spec = ReapSpec {
            consumer: required("consumer", &req.consumer)?.to_owned(),
            min_idle_ms: redis_int("min_idle_ms", req.min_idle_ms)?,
            page_count: bounded("page_count", req.page_count, DEFAULT_REAP_PAGE_COUNT, max)?,
            max_pages: bounded("max_pages", req.max_pages, DEFAULT_REAP_MAX_PAGES, max)?,
            // Set from `start_id` once the stream's layout is known.
            start: StreamId::MIN,
        };
        if !req.start_id.is_empty() {
            check_id("start_id", &req.start_id)?;
        }
        self.ctx.authorize(&caller, Permission::Consume, stream)?;
        let reaped = (self.ctx)
            .reap_stream(stream, group, spec, &req.start_id)
            .await?;
        let metrics = &self.ctx.metrics;
        metrics.reclaimed.inc_by(reaped.claimed.len() as u64);
        metrics
            .deleted_while_pending
            .inc_by(reaped.deleted_ids.len() as u64);
        Ok(Response::new(pb::ReapResponse {
            claimed: convert::entries(reaped.claimed),
            deleted_ids: reaped.deleted_ids,
            next_start_id: reaped.next_start_id,
        }))
    }

    type ReplayStream = ResponseStream<pb::ReplayResponse>;

    async fn replay(
        &self,
        request: Request<pb::ReplayRequest>,
    ) -> Result<Response<Self::ReplayStream>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?.to_owned();
        let bounds = Bounds::parse(&req.start, &req.end)?;
        let spec = ReplaySpec {
            stream,
            range: bounds.range,
            reverse: req.reverse,
            limit: (req.limit > 0).then_some(req.limit),
            page_size: bounded(
                "page_size",
                req.page_size,
                DEFAULT_REPLAY_PAGE_SIZE,
                self.ctx.settings.max_batch_size,
            )?,
        };
        self.ctx
            .authorize(&caller, Permission::Consume, &spec.stream)?;
        let delivery = self.ctx.start_replay(spec, bounds).await?;
        Ok(Response::new(Box::pin(delivery.map(|page| {
            page.map(|entries| pb::ReplayResponse {
                entries: convert::entries(entries),
            })
            .map_err(Status::from)
        }))))
    }

    async fn trim(
        &self,
        request: Request<pb::TrimRequest>,
    ) -> Result<Response<pb::TrimResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let to = match req.strategy {
            Some(trim_request::Strategy::MaxLen(n)) => TrimTo::MaxLen(redis_int("max_len", n)?),
            Some(trim_request::Strategy::MinId(id)) => {
                TrimTo::MinId(StreamId::parse("min_id", &id)?)
            }
            None => return Err(Error::invalid("strategy", "set max_len or min_id").into()),
        };
        redis_int("limit", req.limit)?;
        if req.exact && req.limit > 0 {
            return Err(Error::invalid(
                "limit",
                "LIMIT applies only to approximate trimming (exact = false)",
            )
            .into());
        }
        self.ctx.authorize(&caller, Permission::Admin, stream)?;
        let trimmed = (self.ctx)
            .trim_stream(stream, &to, req.exact, req.limit, req.acked_by_all_groups)
            .await?;
        Ok(Response::new(pb::TrimResponse { trimmed }))
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = required("consumer", &req.consumer)?;
        check_ids("ids", &req.ids)?;
        let delay = nack_delay("delay_ms", req.delay_ms)?;
        self.ctx.authorize(&caller, Permission::Consume, stream)?;
        let scheduled = (self.ctx)
            .nack_ids(stream, group, consumer, &req.ids, delay)
            .await?;
        Ok(Response::new(pb::NackResponse { scheduled }))
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let (caller, req) = Caller::split(request);
        let stream = self.ctx.stream(&req.stream)?;
        let group = required("group", &req.group)?;
        let consumer = required("consumer", &req.consumer)?;
        check_ids("ids", &req.ids)?;
        self.ctx.authorize(&caller, Permission::Consume, stream)?;
        let extended = (self.ctx)
            .extend_ids(stream, group, consumer, &req.ids)
            .await?;
        Ok(Response::new(pb::ExtendResponse { extended }))
    }

    type TailStream = ResponseStream<pb::TailResponse>;

    async fn tail(
        &self,
        request: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let (caller, req) = Caller::split(request);
        let settings = &self.ctx.settings;
        let spec = TailSpec {
            stream: self.ctx.stream(&req.stream)?.to_owned(),
            start: GroupStart::parse("start_id", &req.start_id)?,
            batch_size: settings.batch_size(req.batch_size)?,
            heartbeat: settings.heartbeat(req.heartbeat_ms),
        };
        self.ctx
            .authorize(&caller, Permission::Consume, &spec.stream)?;
        let ctx = &self.ctx;
        let start = || async move {
            let partitions = ctx.partitions(&spec.stream).await?;
            tail::start(
                ctx.broker.clone(),
                spec,
                partitions,
                settings.loops,
                &ctx.doorbell,
                ctx.shutdown.clone(),
            )
            .await
        };
        let respond = |push| pb::TailResponse::from(message(push, None));
        let open = &ctx.metrics.open_tails;
        let responses = self.live(&caller, open, start, respond).await?;
        Ok(Response::new(responses))
    }

    type ProduceStreamStream = ResponseStream<pb::ProduceStreamResponse>;

    async fn produce_stream(
        &self,
        request: Request<tonic::Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        Ok(Response::new(self.produce_stream_answers(request)))
    }

    type ConsumeStream = ResponseStream<pb::ConsumeResponse>;

    async fn consume(
        &self,
        request: Request<tonic::Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        Ok(Response::new(self.consume_session(request).await?))
    }
}
