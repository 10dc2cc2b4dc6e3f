//! The live web dashboard (`--http-listen`, and `streamgate demo`): a page
//! showing the streams under the key prefix and, per stream, its groups,
//! consumers, pending entries and newest entries as they arrive, with
//! buttons for the API's actions.
//!
//! It is a thin face over the gateway's own gRPC services ([`LocalGrpc`]):
//! every read and every action is an RPC made for the person at the page
//! with their bearer token, so validation, authorization, error messages
//! and metrics are the API's, not a second copy (DESIGN.md). All assets
//! are embedded in the binary; the page loads nothing from another host.
//!
//! - [`local`]: the in-process gRPC channel.
//! - `http`: routes, the JSON API and its error shape.
//! - `live`: the streamed live view.
//! - `snapshot`: what a stream's view holds.
//! - `assets`: the page itself.

mod assets;
mod http;
mod live;
pub mod local;
mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;

pub use local::{LocalGrpc, OnBehalf};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::demo::Demo;
use crate::shutdown::Shutdown;

/// `Reclaim`'s idle threshold when neither the page nor the demo sets one:
/// the seed demo's five seconds.
pub const DEFAULT_CLAIM_MIN_IDLE_MS: u64 = 5000;

/// What the dashboard serves from.
pub struct Options {
    /// The gateway's services.
    pub local: LocalGrpc,
    /// Whether the page must ask for a token.
    pub auth_enabled: bool,
    /// The demo's consumers, under `streamgate demo`.
    pub demo: Option<Arc<Demo>>,
}

/// Binds `addr` and serves the dashboard until shutdown, on `tasks`;
/// returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    options: Options,
    shutdown: Shutdown,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = http::router(Arc::new(http::App {
        local: options.local,
        auth_enabled: options.auth_enabled,
        demo: options.demo,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    }));
    tasks.spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "dashboard failed");
        }
    });
    Ok(bound)
}
