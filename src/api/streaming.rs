//! The bidirectional RPCs of `EventStream`: ProduceStream and Consume.
//!
//! Both read client messages for as long as the call lasts, so they are
//! written here as the two halves they are (reading and validating what the
//! client sends, and the answers), while each request still goes through
//! the same validation, authorization and broker calls as its unary
//! counterpart ([`EventStreamService::produce_one`],
//! [`EventStreamService::subscribe_spec`]).

use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status, Streaming};

use super::event_stream::{Message, ResponseStream, holding, id_list, message};
use super::{Caller, EventStreamService};
use crate::consume::{self, Op, OpKind, Out};
use crate::error::{Error, Result};
use crate::metrics::OpenGuard;
use crate::pb::{self, consume_request, consume_response};

/// Requests of one ProduceStream being worked on at once. Their appends
/// pipeline onto the shared Redis connection; answers leave in order.
const PRODUCE_IN_FLIGHT: usize = 128;

/// How long a Consume call may take to send its `open` message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

impl EventStreamService {
    /// ProduceStream: answers each request as Produce would, in order, with
    /// up to [`PRODUCE_IN_FLIGHT`] requests worked on at once.
    pub(super) fn produce_stream_answers(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> ResponseStream<pb::ProduceStreamResponse> {
        let (caller, mut requests) = Caller::split(request);
        let (answers, rx) = mpsc::channel(PRODUCE_IN_FLIGHT);
        let service = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        self.ctx.tasks.spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut reading = true;
            // Until the client half-closed and every answer is sent (then
            // the stream ends OK).
            while reading || !in_flight.is_empty() {
                let answer = tokio::select! {
                    biased;
                    () = shutdown.triggered() => Err(Error::ShuttingDown.into()),
                    Some(answer) = in_flight.next() => Ok(answer),
                    message = requests.message(), if reading && in_flight.len() < PRODUCE_IN_FLIGHT => {
                        match message {
                            Ok(Some(req)) => {
                                in_flight.push_back(service.produce_answer(&caller, req));
                                continue;
                            }
                            Ok(None) => {
                                reading = false;
                                continue;
                            }
                            // The client's side broke: nothing more can be read.
                            Err(status) => Err(status),
                        }
                    }
                };
                let last = answer.is_err();
                if answers.send(answer).await.is_err() || last {
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// One ProduceStream answer: the IDs, or the code and message Produce
    /// would have failed with.
    async fn produce_answer(
        &self,
        caller: &Caller,
        req: pb::ProduceRequest,
    ) -> pb::ProduceStreamResponse {
        match self.produce_one(caller, req).await {
            Ok(ids) => pb::ProduceStreamResponse {
                ids,
                code: 0,
                message: String::new(),
            },
            Err(err) => {
                let status = Status::from(err);
                pb::ProduceStreamResponse {
                    ids: Vec::new(),
                    code: status.code() as u32,
                    message: status.message().to_owned(),
                }
            }
        }
    }

    /// Consume: waits for `open`, sets the subscription up as Subscribe
    /// does, then runs a [`consume::Session`].
    pub(super) async fn consume_session(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<ResponseStream<pb::ConsumeResponse>, Status> {
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
        let spec = self.subscribe_spec(&caller, open)?;
        let slot = ctx.subscriptions.acquire(caller.peer)?;
        let session = consume::start(
            ctx.broker.clone(),
            spec,
            ctx.settings.loops,
            ctx.groups.clone(),
            &ctx.doorbell,
            ctx.shutdown.clone(),
            Box::pin(operations(requests)),
        )
        .await?;
        let guard = OpenGuard::new(&ctx.metrics.open_subscriptions);
        let (delivered, acked) = (ctx.metrics.delivered.clone(), ctx.metrics.acked.clone());
        let responses = session.map(move |out| {
            let _open = &guard;
            let kind = match out? {
                Out::Push(push) => match message(push, Some(&delivered)) {
                    Message::Batch(batch) => consume_response::Kind::Batch(batch),
                    Message::Heartbeat(beat) => consume_response::Kind::Heartbeat(beat),
                },
                Out::Confirm(confirm) => {
                    if confirm.op == OpKind::Ack {
                        acked.inc_by(confirm.outcome.done.len() as u64);
                    }
                    consume_response::Kind::Confirm(pb::Confirm {
                        op: match confirm.op {
                            OpKind::Ack => pb::ConfirmOp::Ack,
                            OpKind::Nack => pb::ConfirmOp::Nack,
                            OpKind::Extend => pb::ConfirmOp::Extend,
                        } as i32,
                        done: super::convert::ids(&confirm.outcome.done),
                        not_pending: super::convert::ids(&confirm.outcome.not_pending),
                    })
                }
            };
            Ok(pb::ConsumeResponse { kind: Some(kind) })
        });
        Ok(holding(Box::pin(responses), slot))
    }
}

/// The operations a Consume client sends after `open`, validated; a
/// message that cannot be read ends them (the call is broken anyway).
fn operations(requests: Streaming<pb::ConsumeRequest>) -> impl Stream<Item = Result<Op>> + Send {
    requests.map_while(|message| message.ok().map(operation))
}

/// One client message as an operation.
fn operation(message: pb::ConsumeRequest) -> Result<Op> {
    match message.kind {
        Some(consume_request::Kind::Ack(ack)) => Ok(Op::Ack(id_list("ack.ids", &ack.ids)?)),
        Some(consume_request::Kind::Nack(nack)) => {
            i64::try_from(nack.delay_ms)
                .map_err(|_| Error::invalid("nack.delay_ms", "is too large"))?;
            Ok(Op::Nack {
                ids: id_list("nack.ids", &nack.ids)?,
                delay_ms: nack.delay_ms,
            })
        }
        Some(consume_request::Kind::Extend(extend)) => {
            Ok(Op::Extend(id_list("extend.ids", &extend.ids)?))
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
