//! The live web dashboard (`--http-listen`, and `streamgate demo`): a page
//! showing the streams under the key prefix and, per stream, its groups,
//! consumers, pending entries and newest entries as they arrive, with
//! buttons for the API's actions.
//!
//! It is a thin face over the gateway's own gRPC services ([`LocalGrpc`]):
//! every read of Redis and every action on it is an RPC made for the
//! person at the page with their bearer token, so validation,
//! authorization, error messages and metrics are the API's, not a second
//! copy of its rules that could drift from them. The one control that is
//! no RPC is the demo's `Crash next 3` (only under `streamgate demo`): it
//! arms a demo consumer of this process to drop its next deliveries,
//! touches nothing in Redis, and takes no caller. All assets are embedded
//! in the binary; the page loads nothing from another host.
//!
//! - [`local`]: the in-process gRPC channel.
//! - `http`: routes, the JSON API and its error shape.
//! - `live`: the streamed live view; `feed`: what it sends a page that may
//!   not keep up; `outbox`: what it holds for a page.
//! - `snapshot`: what a stream's view holds.
//! - `assets`: the page itself.
//!
//! No page can make the gateway hold without bound ([`LiveLimits`]): at
//! most [`MAX_LIVE_VIEWS`] live views run at once (each is a task, a Tail
//! and a re-read of the view twice a second), each holds at most
//! [`QUEUED_EVENTS`] events and [`QUEUED_BYTES`] for its page, and a page
//! that falls behind is told how many entries it missed instead of being
//! buffered for. A page that takes nothing for [`PAGE_STALL`] while events
//! wait is disconnected.

mod assets;
mod controls;
mod feed;
mod http;
mod live;
mod outbox;
mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::local::{LocalGrpc, OnBehalf};
pub use controls::DemoControls;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::shutdown::Shutdown;

/// `Reclaim`'s idle threshold when neither the page nor the demo sets one:
/// the seed demo's five seconds.
pub const DEFAULT_CLAIM_MIN_IDLE_MS: u64 = 5000;

/// Live views open at once, on the whole dashboard. A dashboard is for
/// people: this is a large team with a few tabs each; the next page is
/// refused with RESOURCE_EXHAUSTED and retries every second.
pub const MAX_LIVE_VIEWS: usize = 64;

/// Events queued for one page at most: a page that reads keeps this near
/// zero.
pub const QUEUED_EVENTS: usize = 64;

/// Bytes queued for one page at most, except that a page with nothing
/// queued takes any one event (a snapshot of a stream with very many
/// groups can be larger). Entries are sent at most 16 KiB each and in
/// events of at most 256 KiB, so this is a few events of large entries or
/// thousands of small ones.
pub const QUEUED_BYTES: usize = 1024 * 1024;

/// A page that takes nothing for this long while events wait for it is
/// disconnected. A real page reconnects within a second and starts from
/// a fresh view; a tab the browser froze or a client that never reads
/// gives its live view back.
pub const PAGE_STALL: Duration = Duration::from_secs(60);

/// What the live views may hold; [`serve`] uses the constants above.
#[derive(Clone, Copy, Debug)]
pub struct LiveLimits {
    /// Live views open at once ([`MAX_LIVE_VIEWS`]).
    pub max_views: usize,
    /// Events queued for one page at most ([`QUEUED_EVENTS`]).
    pub queued_events: usize,
    /// Bytes queued for one page at most ([`QUEUED_BYTES`]).
    pub queued_bytes: usize,
    /// How long a page may take nothing while events wait ([`PAGE_STALL`]).
    pub stall: Duration,
}

impl Default for LiveLimits {
    fn default() -> LiveLimits {
        LiveLimits {
            max_views: MAX_LIVE_VIEWS,
            queued_events: QUEUED_EVENTS,
            queued_bytes: QUEUED_BYTES,
            stall: PAGE_STALL,
        }
    }
}

/// What the dashboard serves from.
pub struct Options {
    /// The gateway's services.
    pub local: LocalGrpc,
    /// Whether the page must ask for a token.
    pub auth_enabled: bool,
    /// The demo's consumers, under `streamgate demo`.
    pub demo: Option<Arc<dyn DemoControls>>,
}

/// Binds `addr` and serves the dashboard until shutdown, on `tasks`;
/// returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    options: Options,
    shutdown: Shutdown,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    serve_with_limits(addr, options, LiveLimits::default(), shutdown, tasks).await
}

/// [`serve`] with other [`LiveLimits`].
pub async fn serve_with_limits(
    addr: SocketAddr,
    options: Options,
    limits: LiveLimits,
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
        live_views: Arc::new(tokio::sync::Semaphore::new(limits.max_views)),
        limits,
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
