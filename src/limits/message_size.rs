//! The largest gRPC message a client may send (`--max-message-bytes`).
//!
//! tonic enforces `max_decoding_message_size` itself while decoding the
//! request, before any handler runs, and answers OUT_OF_RANGE. The contract
//! says an exceeded limit is RESOURCE_EXHAUSTED naming the limit, so this
//! layer rewrites that one answer on its way out. Requests are unary or
//! server-streaming, so the rejection is always a trailers-only response
//! whose status sits in the headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::error;

/// Wraps the gRPC routes; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct MessageSizeLayer {
    max_message_bytes: usize,
}

impl MessageSizeLayer {
    /// A layer for a server whose services decode at most
    /// `max_message_bytes` per message.
    pub fn new(max_message_bytes: usize) -> MessageSizeLayer {
        MessageSizeLayer { max_message_bytes }
    }
}

impl<S> Layer<S> for MessageSizeLayer {
    type Service = MessageSize<S>;

    fn layer(&self, inner: S) -> MessageSize<S> {
        MessageSize {
            inner,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// The service [`MessageSizeLayer`] produces.
#[derive(Clone, Debug)]
pub struct MessageSize<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MessageSize<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let max = self.max_message_bytes;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            remap(response.headers_mut(), max);
            Ok(response)
        })
    }
}

/// Replaces tonic's over-size status in a trailers-only response.
fn remap(headers: &mut http::HeaderMap, max: usize) {
    // Cheap test first: only OUT_OF_RANGE (11) answers are candidates.
    if headers.get(Status::GRPC_STATUS).map(|v| v.as_bytes()) != Some(b"11") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if let Some(err) = error::from_transport_status(&status, max) {
        headers.remove(Status::GRPC_MESSAGE);
        // Only fails for a message that cannot be a header value; ours is
        // plain ASCII.
        let _ = Status::from(err).add_header(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn headers(status: &Status) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn tonic_over_size_becomes_resource_exhausted_naming_the_flag() {
        let mut h = headers(&Status::out_of_range(
            "Error, decoded message length too large: found 5000 bytes, the limit is: 4096 bytes",
        ));
        remap(&mut h, 4096);
        let status = Status::from_header_map(&h).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("4096 bytes (--max-message-bytes)")
        );
    }

    #[test]
    fn other_statuses_pass_untouched() {
        for status in [
            Status::out_of_range("something else"),
            Status::not_found("x"),
        ] {
            let mut h = headers(&status);
            remap(&mut h, 4096);
            let after = Status::from_header_map(&h).unwrap();
            assert_eq!(
                (after.code(), after.message()),
                (status.code(), status.message())
            );
        }
        let mut empty = http::HeaderMap::new();
        remap(&mut empty, 1);
        assert!(empty.is_empty());
    }
}
