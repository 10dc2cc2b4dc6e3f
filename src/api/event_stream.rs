//! `streamgate.v1.EventStream`: the data plane.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{ApiSettings, bounded, convert, required};
use crate::broker::{Broker, Cap, ReapSpec, TrimTo};
use crate::error::{Error, Result};
use crate::ids::{GroupStart, IdRange, StreamId};
use crate::pb::{
    self, event_stream_server::EventStream, subscribe_response, tail_response, trim_request,
};
use crate::replay::{self, ReplaySpec};
use crate::shutdown::Shutdown;
use crate::subscription::{self, SubscribeSpec};
use crate::tail::{self, TailSpec};

/// A server stream as tonic wants it.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Default entries examined per XAUTOCLAIM page.
const DEFAULT_REAP_PAGE_COUNT: u32 = 100;
/// Default XAUTOCLAIM pages per Reap.
const DEFAULT_REAP_MAX_PAGES: u32 = 10;
/// Default Replay page size.
const DEFAULT_REPLAY_PAGE_SIZE: u32 = 100;

/// Implements the EventStream service on a [`Broker`].
#[derive(Clone)]
pub struct EventStreamService {
    broker: Broker,
    settings: Arc<ApiSettings>,
    shutdown: Shutdown,
}

impl EventStreamService {
    /// A service answering from `broker`; its streams end on `shutdown`.
    pub fn new(broker: Broker, settings: Arc<ApiSettings>, shutdown: Shutdown) -> Self {
        EventStreamService {
            broker,
            settings,
            shutdown,
        }
    }
}

/// Parses every ID of a request list, naming the bad one by index.
fn id_list(field: &str, ids: &[String]) -> Result<Vec<StreamId>> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "at least one ID is required"));
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| StreamId::parse(&format!("{field}[{i}]"), id))
        .collect()
}

#[tonic::async_trait]
impl EventStream for EventStreamService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        if req.events.is_empty() {
            return Err(Error::invalid("events", "at least one event is required").into());
        }
        if req.events.len() > self.settings.max_produce_events {
            return Err(Error::LimitExceeded(format!(
                "{} events exceed the limit of {} per Produce (--max-produce-events)",
                req.events.len(),
                self.settings.max_produce_events
            ))
            .into());
        }
        let max_len = req.max_len.unwrap_or(self.settings.default_max_len);
        let cap = (max_len > 0).then_some(Cap {
            max_len,
            exact: req.exact,
        });
        let events = req
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| convert::event(i, e))
            .collect::<Result<Vec<_>>>()?;
        let ids = self.broker.produce(stream, &events, cap).await?;
        Ok(Response::new(pb::ProduceResponse { ids }))
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let spec = SubscribeSpec {
            stream: required("stream", &req.stream)?.to_owned(),
            group: required("group", &req.group)?.to_owned(),
            consumer: required("consumer", &req.consumer)?.to_owned(),
            batch_size: bounded(
                "batch_size",
                req.batch_size,
                self.settings.default_batch_size,
                self.settings.max_batch_size,
            )?,
            create_group: req.create_group,
            group_start: GroupStart::parse("group_start_id", &req.group_start_id)?,
            pending_first: req.pending_first,
        };
        let delivery = subscription::start(
            self.broker.clone(),
            spec,
            self.settings.block,
            self.shutdown.clone(),
        )
        .await?;
        let responses = delivery.map(|item| {
            item.map(|batch| pb::SubscribeResponse {
                kind: Some(subscribe_response::Kind::Batch(pb::Batch {
                    entries: convert::entries(batch),
                })),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let ids = id_list("ids", &req.ids)?;
        let acked = self.broker.ack(stream, group, &ids).await?;
        Ok(Response::new(pb::AckResponse { acked }))
    }

    async fn reap(
        &self,
        request: Request<pb::ReapRequest>,
    ) -> Result<Response<pb::ReapResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let group = required("group", &req.group)?;
        let spec = ReapSpec {
            consumer: required("consumer", &req.consumer)?.to_owned(),
            min_idle_ms: req.min_idle_ms,
            page_count: bounded(
                "page_count",
                req.page_count,
                DEFAULT_REAP_PAGE_COUNT,
                self.settings.max_batch_size,
            )?,
            max_pages: bounded(
                "max_pages",
                req.max_pages,
                DEFAULT_REAP_MAX_PAGES,
                self.settings.max_batch_size,
            )?,
            start: match req.start_id.as_str() {
                "" => StreamId::MIN,
                id => StreamId::parse("start_id", id)?,
            },
        };
        let reaped = self.broker.reap(stream, group, &spec).await?;
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
        let req = request.into_inner();
        let spec = ReplaySpec {
            stream: required("stream", &req.stream)?.to_owned(),
            range: IdRange::parse("start", &req.start, "end", &req.end)?,
            reverse: req.reverse,
            limit: (req.limit > 0).then_some(req.limit),
            page_size: bounded(
                "page_size",
                req.page_size,
                DEFAULT_REPLAY_PAGE_SIZE,
                self.settings.max_batch_size,
            )?,
        };
        let delivery = replay::start(self.broker.clone(), spec, self.shutdown.clone());
        let responses = delivery.map(|item| {
            item.map(|page| pb::ReplayResponse {
                entries: convert::entries(page),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn trim(
        &self,
        request: Request<pb::TrimRequest>,
    ) -> Result<Response<pb::TrimResponse>, Status> {
        let req = request.into_inner();
        let stream = required("stream", &req.stream)?;
        let to = match req.strategy {
            Some(trim_request::Strategy::MaxLen(n)) => TrimTo::MaxLen(n),
            Some(trim_request::Strategy::MinId(id)) => {
                TrimTo::MinId(StreamId::parse("min_id", &id)?)
            }
            None => return Err(Error::invalid("strategy", "set max_len or min_id").into()),
        };
        if req.exact && req.limit > 0 {
            return Err(Error::invalid(
                "limit",
                "LIMIT applies only to approximate trimming (exact = false)",
            )
            .into());
        }
        let trimmed = self.broker.trim(stream, &to, req.exact, req.limit).await?;
        Ok(Response::new(pb::TrimResponse { trimmed }))
    }

    type TailStream = ResponseStream<pb::TailResponse>;

    async fn tail(
        &self,
        request: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let req = request.into_inner();
        let spec = TailSpec {
            stream: required("stream", &req.stream)?.to_owned(),
            start: GroupStart::parse("start_id", &req.start_id)?,
            batch_size: bounded(
                "batch_size",
                req.batch_size,
                self.settings.default_batch_size,
                self.settings.max_batch_size,
            )?,
        };
        let delivery = tail::start(
            self.broker.clone(),
            spec,
            self.settings.block,
            self.shutdown.clone(),
        )
        .await?;
        let responses = delivery.map(|item| {
            item.map(|batch| pb::TailResponse {
                kind: Some(tail_response::Kind::Batch(pb::Batch {
                    entries: convert::entries(batch),
                })),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(responses)))
    }
}
