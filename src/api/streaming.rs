//! The bidirectional RPCs of `EventStream`: ProduceStream and Consume.
//!
//! Both read client messages for as long as the call lasts, so they are
//! written here as the two halves they are (reading and validating what the
//! client sends, and the answers), while each request still goes through
//! the same validation, authorization and broker calls as its unary
//! counterpart ([`EventStreamService::produce_one`],
//! [`EventStreamService::subscribe_spec`]).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::FuturesOrdered;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status, Streaming};

use super::event_stream::{Append, Message, ResponseStream, message};
use super::{Caller, EventStreamService};
use crate::consume::EntryId;
use crate::consume::{self, Op, OpKind, Out};
use crate::error::{Error, Result};
use crate::group_ops::nack_delay;
use crate::limits::Answers;
use crate::partition::parse_id;
use crate::pb::{self, consume_request, consume_response};
use crate::subscription::SubscribeSpec;

/// Units of work of one ProduceStream in progress at once (each one
/// request, or requests appended together). Their appends pipeline onto
/// the shared Redis connection; answers leave in order.
const PRODUCE_IN_FLIGHT: usize = 128;

/// Most requests taken together: those already received when one is read.
const PRODUCE_TOGETHER: usize = 64;

/// How long a Consume call may take to send its `open` message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests of a ProduceStream answered by one broker call.
enum Work {
    /// Refused before reaching Redis.
    Refused(Error),
    /// One request (the only way for idempotent events).
    One(Append),
    /// Consecutive requests to one stream without idempotency keys: one
    /// pipeline.
    Together(Vec<Append>),
}

impl EventStreamService {
    /// ProduceStream: answers each request as Produce would, in order, with
    /// up to [`PRODUCE_IN_FLIGHT`] units of work in progress at once.
    ///
    /// Requests that have already arrived when one is read are taken with
    /// it, and consecutive ones to the same stream share one Redis
    /// pipeline: a client with many single-event requests in flight then
    /// costs a few round trips, not one per event.
    pub(super) fn produce_stream_answers(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> ResponseStream<pb::ProduceStreamResponse> {
        let read = Answers::of(&request);
        let (caller, mut requests) = Caller::split(request);
        let (answers, rx) = mpsc::channel(PRODUCE_IN_FLIGHT);
        let service = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        self.ctx.tasks.spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut reading = true;
            // Why the client's side broke, once it did.
            let mut broken = None;
            // Until the client half-closed (or its stream broke) and every
            // request read is answered.
            while reading || !in_flight.is_empty() {
                let done = tokio::select! {
                    biased;
                    () = shutdown.triggered() => Err(Error::ShuttingDown.into()),
                    Some(done) = in_flight.next() => Ok(done),
                    message = requests.message(), if reading && in_flight.len() < PRODUCE_IN_FLIGHT => {
                        let mut ready = Vec::new();
                        let mut next = Some(message);
                        // The first message, then those already here.
                        while let Some(message) = next.take() {
                            match message {
                                Ok(Some(req)) => ready.push(service.produce_spec(&caller, req)),
                                Ok(None) => reading = false,
                                // Nothing more can be read; what was read is
                                // still answered, then the stream ends with
                                // this status.
                                Err(status) => {
                                    reading = false;
                                    broken = Some(status);
                                }
                            }
                            if reading && ready.len() < PRODUCE_TOGETHER {
                                next = requests.message().now_or_never();
                            }
                        }
                        for work in plan(ready) {
                            in_flight.push_back(service.produce_work(work));
                        }
                        continue;
                    }
                };
                let answered = match done {
                    Ok(answered) => answered,
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        return;
                    }
                };
                for answer in answered {
                    if answers.send(Ok(answer)).await.is_err() {
                        return;
                    }
                    read.one();
                }
            }
            if let Some(status) = broken {
                let _ = answers.send(Err(status)).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// The answers to one unit of work, in request order: the IDs, or the
    /// code and message Produce would have failed with.
    async fn produce_work(&self, work: Work) -> Vec<pb::ProduceStreamResponse> {
        let broker = &self.ctx.broker;
        let results = match work {
            Work::Refused(err) => vec![Err(err)],
            Work::One(append) => vec![self.ctx.append(append).await],
            Work::Together(appends) => {
                let count = appends.len();
                let stream = appends[0].stream.clone();
                match self.ctx.partitions(&stream).await {
                    Err(err) => vec![Err(err); count],
                    // Each request to its partitions, one after the other.
                    Ok(partitioned) if partitioned > 0 => {
                        let mut results = Vec::with_capacity(count);
                        for append in appends {
                            results.push(self.ctx.append(append).await);
                        }
                        results
                    }
                    Ok(_) => {
                        let requests = appends.into_iter().map(|a| (a.events, a.cap)).collect();
                        match broker.produce_many(&stream, requests).await {
                            Ok(results) => results,
                            Err(err) => vec![Err(err); count],
                        }
                    }
                }
            }
        };
        results
            .into_iter()
            .map(|result| match result {
                Ok(ids) => {
                    self.ctx.metrics.produced.inc_by(ids.len() as u64);
                    pb::ProduceStreamResponse {
                        ids,
                        code: 0,
                        message: String::new(),
                    }
                }
                Err(err) => {
                    let status = Status::from(err);
                    pb::ProduceStreamResponse {
                        ids: Vec::new(),
                        code: status.code() as u32,
                        message: status.message().to_owned(),
                    }
                }
            })
            .collect()
    }

    /// Consume: waits for `open`, sets the subscription up as Subscribe
    /// does, then runs a [`consume::Session`].
    pub(super) async fn consume_session(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<ResponseStream<pb::ConsumeResponse>, Status> {
        let read = Answers::of(&request);
        let (caller, mut requests) = Caller::split(request);
        let ctx = &self.ctx;
        let first = tokio::select! {
            () = ctx.shutdown.triggered() => return Err(Error::ShuttingDown.into()),
            first = tokio::time::timeout(OPEN_TIMEOUT, requests.message()) => first,
        };
        let open = match first {
            Ok(Ok(Some(pb::ConsumeRequest {
                kind: Some(consume_request::Kind::Open(open)),
            }))) => open,
            Ok(Ok(_)) => {
                return Err(Error::invalid(
                    "open",
                    "the first message of a Consume stream must be `open` (a SubscribeRequest)",
                )
                .into());
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(Error::invalid(
                    "open",
                    format!("no `open` message within {} s", OPEN_TIMEOUT.as_secs()),
                )
                .into());
            }
        };
        read.one();
        let spec = self.subscribe_spec(&caller, open)?;
        let start = || async move {
            let partitions = ctx.partitions(&spec.stream).await?;
            let spec = SubscribeSpec { partitions, ..spec };
            consume::start(
                ctx.broker.clone(),
                spec,
                ctx.settings.loops,
                (
                    ctx.groups.clone(),
                    ctx.group_ops.clone(),
                    ctx.owners.clone(),
                ),
                &ctx.doorbell,
                ctx.shutdown.clone(),
                Box::pin(operations(requests, read, partitions)),
            )
            .await
        };
        let delivered = ctx.metrics.delivered.clone();
        let respond = move |out| consume_response(out, &delivered);
        self.live(&caller, &ctx.metrics.open_subscriptions, start, respond)
            .await
    }
}

/// Converts what a Consume session sends; `delivered` counts the entries.
fn consume_response(out: Out, delivered: &Counter) -> pb::ConsumeResponse {
    let kind = match out {
        Out::Push(push) => match message(push, Some(delivered)) {
            Message::Batch(batch) => consume_response::Kind::Batch(batch),
            Message::Heartbeat(beat) => consume_response::Kind::Heartbeat(beat),
        },
        Out::Confirm(confirm) => consume_response::Kind::Confirm(pb::Confirm {
            op: match confirm.op {
                OpKind::Ack => pb::ConfirmOp::Ack,
                OpKind::Nack => pb::ConfirmOp::Nack,
                OpKind::Extend => pb::ConfirmOp::Extend,
            } as i32,
            done: confirm.done,
            not_pending: confirm.not_pending,
        }),
    };
    pb::ConsumeResponse { kind: Some(kind) }
}

/// The operations a Consume client sends after `open`, validated. A
/// message that cannot be read is the last item: its error ends the call.
///
/// The session asks for the next operation only once the previous one is
/// applied and its confirm queued, so that is when the previous message
/// counts as answered for the byte budget.
fn operations(
    requests: Streaming<pb::ConsumeRequest>,
    read: Answers,
    partitions: u32,
) -> impl Stream<Item = Result<Op>> + Send {
    futures_util::stream::unfold(Some((requests, read, false)), move |state| async move {
        let (mut requests, read, answering) = state?;
        if answering {
            read.one();
        }
        match requests.message().await {
            Ok(Some(message)) => {
                Some((operation(message, partitions), Some((requests, read, true))))
            }
            Ok(None) => None,
            Err(status) => Some((Err(Error::RequestStream(status)), None)),
        }
    })
}

/// One client message as an operation, on a stream of `partitions`
/// partitions (0: plain).
fn operation(message: pb::ConsumeRequest, partitions: u32) -> Result<Op> {
    let ids = |field: &str, ids: &[String]| entry_ids(field, ids, partitions);
    match message.kind {
        Some(consume_request::Kind::Ack(ack)) => Ok(Op::Ack(ids("ack.ids", &ack.ids)?)),
        Some(consume_request::Kind::Nack(nack)) => Ok(Op::Nack {
            ids: ids("nack.ids", &nack.ids)?,
            delay_ms: nack_delay("nack.delay_ms", nack.delay_ms)?,
        }),
        Some(consume_request::Kind::Extend(extend)) => {
            Ok(Op::Extend(ids("extend.ids", &extend.ids)?))
        }
        Some(consume_request::Kind::Open(_)) => Err(Error::invalid(
            "open",
            "the stream is already open: `open` may only be the first message",
        )),
        None => Err(Error::invalid(
            "kind",
            "an empty message: set ack, nack or extend",
        )),
    }
}

/// The IDs of request field `field`, at least one, each with its
/// partition ([`crate::partition::parse_id`]).
fn entry_ids(field: &str, ids: &[String], partitions: u32) -> Result<Vec<EntryId>> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "at least one ID is required"));
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| parse_id(&format!("{field}[{i}]"), id, partitions))
        .collect()
}

/// Groups requests, in order, into units of work: consecutive plain
/// requests to one stream go together; idempotent ones (one script call
/// each) and refused ones alone.
fn plan(ready: Vec<Result<Append>>) -> Vec<Work> {
    let mut plan = Vec::new();
    let mut together: Vec<Append> = Vec::new();
    let flush = |together: &mut Vec<Append>, plan: &mut Vec<Work>| match together.len() {
        0 => {}
        1 => plan.push(Work::One(together.pop().expect("one"))),
        _ => plan.push(Work::Together(std::mem::take(together))),
    };
    for spec in ready {
        match spec {
            Ok(append) if append.events.iter().all(|e| e.idempotency_key.is_empty()) => {
                if together
                    .first()
                    .is_some_and(|first| first.stream != append.stream)
                {
                    flush(&mut together, &mut plan);
                }
                together.push(append);
            }
            other => {
                flush(&mut together, &mut plan);
                plan.push(match other {
                    Ok(append) => Work::One(append),
                    Err(err) => Work::Refused(err),
                });
            }
        }
    }
    flush(&mut together, &mut plan);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;

    fn append(stream: &str, key: &str) -> Result<Append> {
        let mut event = Event::new(0, "t".into(), Default::default(), Default::default())?;
        event.idempotency_key = key.into();
        Ok(Append {
            stream: stream.into(),
            events: vec![event],
            cap: None,
        })
    }

    /// The plan as letters: `T<n>` n requests together, `O` one, `R` refused.
    fn shape(plan: &[Work]) -> Vec<String> {
        plan.iter()
            .map(|work| match work {
                Work::Refused(_) => "R".to_owned(),
                Work::One(_) => "O".to_owned(),
                Work::Together(appends) => format!("T{}", appends.len()),
            })
            .collect()
    }

    #[test]
    fn consecutive_plain_requests_to_one_stream_go_together() {
        let refused = Err(Error::invalid("events", "at least one event is required"));
        let ready = vec![
            append("a", ""),
            append("a", ""),
            append("a", ""),
            append("b", ""),
            append("a", "k"),
            append("a", ""),
            refused,
            append("a", ""),
            append("a", ""),
        ];
        assert_eq!(shape(&plan(ready)), ["T3", "O", "O", "O", "R", "T2"]);
        assert!(plan(Vec::new()).is_empty());
    }
}
