//! Reloading the auth config on SIGHUP.

use super::Auth;
use crate::shutdown::Shutdown;

/// Reloads `auth` from its file on every SIGHUP until shutdown. A file that
/// does not load leaves the current config in force and logs an error, so
/// a half-written edit cannot lock everyone out. Open streams are never
/// touched: each request keeps the grants it was authenticated with.
pub async fn on_sighup(auth: Auth, shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; the auth config will not be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        let Some(path) = auth.source().map(|p| p.display().to_string()) else {
            tracing::info!("SIGHUP: authentication is off (no --auth-config); nothing to reload");
            continue;
        };
        match auth.reload() {
            Ok(tokens) => tracing::info!(path, tokens, "SIGHUP: auth config reloaded"),
            Err(error) => tracing::error!(
                path,
                error,
                "SIGHUP: auth config not reloaded; the previous config stays in force"
            ),
        }
    }
}
