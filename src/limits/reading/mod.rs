//! How the gateway reads every request, whatever the rpc: one tower layer
//! around the gRPC routes.
//!
//! One rule for every rpc, unary, server-, client- and bidi-streaming:
//! - a message longer than `--max-message-bytes` is RESOURCE_EXHAUSTED
//!   naming the flag;
//! - a message that cannot be decoded, a body that ends inside a message,
//!   a compressed message (the gateway accepts no compression) and a
//!   single-message rpc sent no message are INVALID_ARGUMENT naming the rpc;
//! - once a client's request stream broke, the call ends with that status,
//!   never OK, whatever the handler made of the broken stream.
//!
//! tonic detects these itself but answers with statuses that blame the
//! server (INTERNAL) or that the contract does not use (OUT_OF_RANGE).
//! The layer does not read tonic's messages to find out what happened: it
//! follows the gRPC framing of the body as it passes ([`framing`]) and
//! knows; decoding failures come from the gateway's own [`pb::Codec`]. It then
//! settles the status wherever it travels: in the headers of a
//! trailers-only answer, or in the trailers of a streaming one.
//!
//! The same cursor charges the byte budget ([`super::budget`]): each
//! message's size is held as soon as its prefix arrives and before its
//! bytes go further, so a call waits (and HTTP/2 flow control pushes back
//! on its client) while the budget is used up. The bytes are held until
//! the message is answered: for a unary or server-streaming rpc when the
//! handler has answered (or set up its stream), for a client stream
//! message by message as the handler reports through [`Answers`].

mod framing;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::{Layer, Service};

use self::framing::{Broken, Framing};
use super::budget::{ByteBudget, Share};
use crate::error::Error;
use crate::pb::{self, Method};

/// Wraps the gRPC routes; see the module docs.
#[derive(Clone, Debug)]
pub struct ReadingLayer {
    max_message_bytes: usize,
    budget: Arc<ByteBudget>,
}

impl ReadingLayer {
    /// A layer for services that decode at most `max_message_bytes` per
    /// message, holding requests within `budget`.
    pub(crate) fn new(max_message_bytes: usize, budget: Arc<ByteBudget>) -> ReadingLayer {
        ReadingLayer {
            max_message_bytes,
            budget,
        }
    }
}

impl<S> Layer<S> for ReadingLayer {
    type Service = Reading<S>;

    fn layer(&self, inner: S) -> Reading<S> {
        Reading {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ReadingLayer`] produces.
#[derive(Clone, Debug)]
pub struct Reading<S> {
    inner: S,
    layer: ReadingLayer,
}

impl<S> Service<http::Request<Body>> for Reading<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Health and reflection are tonic's own and read nothing large.
        let Some(rpc) = pb::method(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let call = Arc::new(Call {
            rpc,
            max_message_bytes: self.layer.max_message_bytes,
            share: self.layer.budget.share(),
            unanswered: Mutex::default(),
            broken: Mutex::default(),
        });
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(Answers(Some(call.clone())));
        let body = Body::new(Metered {
            inner: body,
            framing: Framing::new(call.max_message_bytes),
            call: call.clone(),
            rest: None,
            admitting: None,
        });
        let response = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let response = response.await?;
            if !call.rpc.client_streaming {
                // The one message is answered (or its stream set up).
                call.share.release_all();
            }
            let (mut parts, body) = response.into_parts();
            if parts.headers.contains_key(Status::GRPC_STATUS) {
                call.settle(&mut parts.headers);
                return Ok(http::Response::from_parts(parts, body));
            }
            let body = if call.rpc.client_streaming {
                Body::new(Settled { inner: body, call })
            } else {
                body
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// One call as the layer follows it.
#[derive(Debug)]
struct Call {
    rpc: &'static Method,
    max_message_bytes: usize,
    share: Share,
    /// Sizes of the messages let through and not yet answered, oldest
    /// first.
    unanswered: Mutex<VecDeque<usize>>,
    /// What broke the request body, once something did.
    broken: Mutex<Option<Broken>>,
}

impl Call {
    /// Rewrites the status in `map` (headers of a trailers-only answer, or
    /// trailers) when the request broke or could not be decoded.
    fn settle(&self, map: &mut http::HeaderMap) {
        let Some(status) = Status::from_header_map(map) else {
            return;
        };
        let broken = lock(&self.broken).clone();
        let settled = match broken {
            Some(broken) => self.error(broken),
            None if status.code() == Code::InvalidArgument
                && status.message().starts_with(pb::UNDECODABLE) =>
            {
                Error::Unreadable {
                    rpc: self.rpc.name,
                    reason: status.message().to_owned(),
                }
            }
            None => return,
        };
        map.remove(Status::GRPC_MESSAGE);
        map.remove("grpc-status-details-bin");
        // Only fails for a message that cannot be a header value; the
        // status's own encoding makes any message one.
        let _ = Status::from(settled).add_header(map);
    }

    /// The error a broken request body ends its call with.
    fn error(&self, broken: Broken) -> Error {
        let rpc = self.rpc.name;
        let reason = match broken {
            Broken::TooLarge { len } => {
                return Error::LimitExceeded(format!(
                    "{rpc}: a request message of {len} bytes exceeds the limit of {} bytes \
                     (--max-message-bytes)",
                    self.max_message_bytes
                ));
            }
            Broken::Flag(1) => "a request message is compressed; the gateway accepts no \
                                compression"
                .to_owned(),
            Broken::Flag(flag) => {
                format!("a request message has compressed-flag {flag}; gRPC allows 0 or 1")
            }
            Broken::Truncated { got, want } => match want {
                Some(want) => format!(
                    "the request ended inside a message ({got} of its {want} bytes arrived)"
                ),
                None => format!(
                    "the request ended inside a message prefix ({got} of its 5 bytes arrived)"
                ),
            },
            Broken::Missing => "the request carries no message".to_owned(),
        };
        Error::Unreadable { rpc, reason }
    }

    fn broke(&self, broken: Broken) {
        lock(&self.broken).get_or_insert(broken);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client-streaming handler's side of the budget: it reports each
/// message it has answered, in the order the messages came, so that their
/// bytes go back to the budget and the gateway reads on. Taken from the
/// request's extensions; a no-op for a request that did not pass the
/// layer.
#[derive(Clone, Debug, Default)]
pub struct Answers(Option<Arc<Call>>);

impl Answers {
    /// The handle of `request`'s call.
    pub fn of<T>(request: &tonic::Request<T>) -> Answers {
        request
            .extensions()
            .get::<Answers>()
            .cloned()
            .unwrap_or_default()
    }

    /// The oldest message not yet answered has been answered.
    pub fn one(&self) {
        let Some(call) = &self.0 else { return };
        let size = lock(&call.unanswered).pop_front();
        if let Some(size) = size {
            call.share.release(size);
        }
    }
}

/// A request body that follows the framing, records what breaks, and lets
/// a message through only once the budget holds its size.
///
/// A chunk is cut where its first new message begins: the bytes before it
/// finish messages already let through, which must never wait for room
/// (their calls could not answer them, and so release bytes, before they
/// are whole), while the rest waits until its messages are held.
struct Metered {
    inner: Body,
    framing: Framing,
    call: Arc<Call>,
    /// The rest of a cut chunk, with the sizes of the messages starting in
    /// it, to be let through next.
    rest: Option<(Bytes, Vec<usize>)>,
    /// A chunk waiting for its messages' bytes to be held.
    admitting: Option<Admitting>,
}

struct Admitting {
    hold: Pin<Box<dyn Future<Output = ()> + Send>>,
    data: Bytes,
}

impl Metered {
    /// Holds `sizes` for the call and lets `data` through, now or once the
    /// budget has room.
    fn admit(&mut self, sizes: Vec<usize>, data: Bytes) -> Option<Bytes> {
        let total = sizes.iter().sum();
        lock(&self.call.unanswered).extend(&sizes);
        if self.call.share.try_hold(total) {
            return Some(data);
        }
        let call = self.call.clone();
        self.admitting = Some(Admitting {
            hold: Box::pin(async move { call.share.hold(total).await }),
            data,
        });
        None
    }

    /// Lets a waiting chunk through once its bytes are held.
    fn poll_admitted(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some(admitting) = &mut self.admitting else {
            return Poll::Ready(None);
        };
        ready!(admitting.hold.as_mut().poll(cx));
        Poll::Ready(self.admitting.take().map(|a| a.data))
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let data = |data: Bytes| Poll::Ready(Some(Ok(Frame::data(data))));
        if this.admitting.is_some() {
            let admitted = ready!(this.poll_admitted(cx));
            return data(admitted.expect("a chunk was waiting"));
        }
        if let Some((rest, sizes)) = this.rest.take() {
            return match this.admit(sizes, rest) {
                Some(rest) => data(rest),
                None => self.poll_frame(cx),
            };
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            None => {
                if let Some(broken) = this.framing.end(!this.call.rpc.client_streaming) {
                    this.call.broke(broken);
                }
                return Poll::Ready(None);
            }
            other => return Poll::Ready(other),
        };
        let Some(chunk) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        match this.framing.scan(chunk) {
            Ok(starts) if starts.is_empty() => Poll::Ready(Some(Ok(frame))),
            Ok(starts) => {
                let mut chunk = frame.into_data().unwrap_or_default();
                let rest = chunk.split_off(starts[0].at);
                this.rest = Some((rest, starts.iter().map(|s| s.size).collect()));
                if chunk.is_empty() {
                    self.poll_frame(cx)
                } else {
                    data(chunk)
                }
            }
            Err(broken) => {
                this.call.broke(broken);
                // tonic stops at the same place with its own error, which
                // the layer then replaces.
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A streaming answer whose trailers carry the settled status.
struct Settled {
    inner: Body,
    call: Arc<Call>,
}

impl http_body::Body for Settled {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    self.call.settle(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::budget::BudgetMetrics;
    use futures_util::FutureExt;
    use http_body_util::BodyExt;

    fn framed(len: usize) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(0x20, len));
        out
    }

    /// A ProduceStream body of `chunks`, metered against `budget`.
    fn metered(budget: &Arc<ByteBudget>, chunks: Vec<Vec<u8>>) -> (Metered, Arc<Call>) {
        let call = Arc::new(Call {
            rpc: pb::method("/streamgate.v1.EventStream/ProduceStream").unwrap(),
            max_message_bytes: 1000,
            share: budget.share(),
            unanswered: Mutex::default(),
            broken: Mutex::default(),
        });
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        let inner = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let body = Metered {
            inner,
            framing: Framing::new(1000),
            call: call.clone(),
            rest: None,
            admitting: None,
        };
        (body, call)
    }

    fn next(body: &mut Metered) -> Option<Vec<u8>> {
        let frame = body.frame().now_or_never()?;
        Some(frame.unwrap().unwrap().into_data().unwrap().to_vec())
    }

    #[test]
    fn the_end_of_a_message_never_waits_for_room_the_next_one_does() {
        let budget = ByteBudget::new(100, BudgetMetrics::default());
        // 60 + 50 bytes on the wire; the second prefix shares a chunk with
        // the end of the first message.
        let (first, second) = (framed(55), framed(45));
        let mut chunk = first[50..].to_vec();
        chunk.extend_from_slice(&second);
        let (mut body, call) = metered(&budget, vec![first[..50].to_vec(), chunk]);
        assert_eq!(next(&mut body).unwrap(), first[..50]);
        // Another call fills the rest of the budget.
        let other = budget.share();
        assert!(other.try_hold(40));
        assert_eq!(next(&mut body).unwrap(), first[50..], "the tail passes");
        assert_eq!(next(&mut body), None, "the next message waits");
        Answers(Some(call.clone())).one();
        assert_eq!(next(&mut body).unwrap(), second, "room again");
        assert_eq!(lock(&call.unanswered).len(), 1);
    }

    #[test]
    fn a_body_ending_inside_a_message_is_recorded() {
        let budget = ByteBudget::new(1000, BudgetMetrics::default());
        let (mut body, call) = metered(&budget, vec![framed(10)[..8].to_vec()]);
        assert!(next(&mut body).is_some());
        assert!(body.frame().now_or_never().unwrap().is_none());
        assert_eq!(
            *lock(&call.broken),
            Some(Broken::Truncated {
                got: 8,
                want: Some(15)
            })
        );
    }
}
