//! The `/metrics` endpoint, on a port of its own so that scraping never
//! competes with gRPC traffic and can be firewalled separately.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::Metrics;
use crate::shutdown::Shutdown;

/// Content type of the OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` and serves `/metrics` on a task of `tasks` until shutdown.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.triggered().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(bound)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS)], metrics.encode())
}
