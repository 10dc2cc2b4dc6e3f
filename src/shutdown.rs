//! The shutdown signal handed to every long-lived task.
//!
//! tonic's graceful shutdown waits for open response streams to end, and a
//! Subscribe stream never ends by itself: each stream's task watches this
//! signal between reads and ends its stream with UNAVAILABLE, so clients
//! reconnect to another gateway instead of hanging.

use tokio_util::sync::CancellationToken;

/// Cloneable shutdown signal: triggered once, observed by many.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Fires the signal; idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once the signal fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the signal fires.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }
}
