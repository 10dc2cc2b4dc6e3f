//! The shutdown signal handed to every long-lived task, and the tracker
//! those tasks run on.
//!
//! tonic's graceful shutdown waits for open response streams to end, and a
//! Subscribe stream never ends by itself: each stream's task watches this
//! signal between reads and ends its stream with UNAVAILABLE, so clients
//! reconnect to another gateway instead of hanging. Every such task is
//! started with [`Shutdown::spawn`], so that the gateway can wait for all
//! of them after shutdown ([`crate::server::Gateway::wait`]).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cloneable shutdown signal: triggered once, observed by many.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
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

    /// Runs `task`, which must end once this signal fires, on the tracker
    /// the gateway waits on at shutdown.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// The tracker of every task started with [`Shutdown::spawn`].
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}
