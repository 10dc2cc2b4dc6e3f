//! Per-RPC request metrics, recorded by one tower layer around every gRPC
//! route.
//!
//! The layer sits outermost, so it sees every answer the way the client
//! does: refusals by the auth interceptor (UNAUTHENTICATED), by
//! [`crate::limits::ReadingLayer`] (unreadable or over-size messages) and by the
//! handlers are counted alike, and no handler has to remember to record
//! itself. An error is a trailers-only response whose `grpc-status` sits in
//! the headers; a response without it in the headers is a call that was
//! set up: OK. So a server stream's duration is the time to set it up, not
//! its lifetime.
//!
//! Only the streamgate rpcs ([`crate::pb::METHODS`]) are recorded, labelled
//! with the method name (`Produce`); health checks, reflection and unknown
//! paths are not, so a client cannot grow the label set with made-up paths.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tower::{Layer, Service};

use super::Metrics;

/// Wraps the gRPC routes; see the module docs.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> RpcMetricsLayer {
        RpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] produces.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
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
        let rpc = method_name(request.uri().path());
        let response = self.inner.call(request);
        let Some(rpc) = rpc else {
            return Box::pin(response);
        };
        let metrics = self.metrics.clone();
        let start = Instant::now();
        Box::pin(async move {
            let response = response.await?;
            metrics.observe_rpc(rpc, status_code(response.headers()), start.elapsed());
            Ok(response)
        })
    }
}

/// The method name of a streamgate rpc path, `None` for any other path.
fn method_name(path: &str) -> Option<&'static str> {
    crate::pb::method(path).map(|method| method.name)
}

/// The status of a trailers-only response, or OK for a call that was set
/// up (its status follows in the trailers).
fn status_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get(tonic::Status::GRPC_STATUS)
        .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streamgate_paths_have_a_label() {
        assert_eq!(
            method_name("/streamgate.v1.EventStream/Produce"),
            Some("Produce")
        );
        assert_eq!(
            method_name("/streamgate.v1.StreamAdmin/ListPending"),
            Some("ListPending")
        );
        for other in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/streamgate.v1.EventStream/Nope",
            "/streamgate.v1.EventStream/Produce/x",
            "",
        ] {
            assert_eq!(method_name(other), None, "{other}");
        }
    }

    #[test]
    fn the_status_comes_from_the_headers_or_is_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_code(&headers), tonic::Code::Ok);
        tonic::Status::unauthenticated("no token")
            .add_header(&mut headers)
            .unwrap();
        assert_eq!(status_code(&headers), tonic::Code::Unauthenticated);
    }
}
