//! The gateway's gRPC services as an in-process tower service, so the
//! dashboard calls exactly what network clients call.
//!
//! Why not a second implementation over the broker: the page must show the
//! gateway's own semantics (validation, the `authorization` interceptor,
//! permission checks, limits, error messages, per-RPC metrics), and any
//! copy would drift. Why not a loopback TCP channel: with `--tls-cert` or
//! mutual TLS the gateway could not connect to itself without a client
//! certificate. A tonic client over this service runs the same routes the
//! listener serves, minus HTTP/2 framing.

use std::net::SocketAddr;

use tonic::Request;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::limits::ReadingLayer;
use crate::metrics::RpcMetricsLayer;
use crate::pb::event_stream_client::EventStreamClient;
use crate::pb::stream_admin_client::StreamAdminClient;

/// The gRPC routes behind the gateway's server-wide layers; cheap to clone.
#[derive(Clone)]
pub struct LocalGrpc {
    service: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
}

impl LocalGrpc {
    /// Wraps `routes` in the layers the network listener applies too, in
    /// the same order: per-RPC metrics outermost, then the reading rules
    /// and byte budget.
    pub fn new(routes: Routes, metrics: RpcMetricsLayer, reading: ReadingLayer) -> LocalGrpc {
        let service = ServiceBuilder::new()
            .layer(metrics)
            .layer(reading)
            .service(routes.prepare());
        let service = ServiceExt::<http::Request<Body>>::map_err(service, BoxError::from);
        LocalGrpc {
            service: BoxCloneSyncService::new(service),
        }
    }

    /// A data-plane client.
    pub fn events(&self) -> EventStreamClient<Self> {
        EventStreamClient::new(self.clone())
    }

    /// An admin-plane client.
    pub fn admin(&self) -> StreamAdminClient<Self> {
        StreamAdminClient::new(self.clone())
    }
}

impl tower::Service<http::Request<Body>> for LocalGrpc {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = <BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError> as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.service.call(request)
    }
}

/// Who a dashboard call is made for: the bearer token the page sent (as
/// is, so the interceptor judges it like any gRPC caller's) and the
/// browser's address (so per-connection limits count per browser
/// connection, not one shared pool).
#[derive(Clone, Debug, Default)]
pub struct OnBehalf {
    /// The `Authorization` header value, if the page sent one.
    pub authorization: Option<String>,
    /// The browser's TCP peer.
    pub peer: Option<SocketAddr>,
}

impl OnBehalf {
    /// A gRPC request carrying `message` for this caller.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            // A value gRPC metadata cannot carry is no valid bearer token:
            // send a bare scheme so the interceptor refuses it with its
            // usual message instead of treating the caller as tokenless.
            let value = MetadataValue::try_from(value.as_str())
                .unwrap_or_else(|_| MetadataValue::from_static("Bearer"));
            request.metadata_mut().insert("authorization", value);
        }
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: self.peer,
        });
        request
    }
}
