//! Riding out a Redis outage in a long-lived read loop.
//!
//! When Redis stops answering a live stream's reads, the
//! [`crate::driver`] does not end it at once: it retries with capped
//! exponential backoff and jitter for up to `--redis-outage-grace-ms` (the
//! shared connection reconnects underneath), sending heartbeats meanwhile,
//! and resumes where it was if Redis comes back. Past the grace the stream
//! ends with UNAVAILABLE so the client can go elsewhere. One warning when
//! the outage starts and one line when it ends: no log flood.

use std::time::Duration;

use tokio::time::Instant;

/// First retry delay.
const MIN_DELAY: Duration = Duration::from_millis(50);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Capped exponential backoff with full jitter: the n-th delay is uniform
/// in `[0, min(MAX_DELAY, MIN_DELAY * 2^n)]`, so many loops that lost
/// Redis at the same moment do not reconnect in lockstep.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let cap = MIN_DELAY
            .saturating_mul(1 << self.attempt.min(16))
            .min(MAX_DELAY);
        self.attempt = self.attempt.saturating_add(1);
        cap.mul_f64(fastrand::f64())
    }
}

/// An outage in progress.
#[derive(Debug)]
pub struct Outage {
    since: Instant,
    backoff: Backoff,
}

impl Outage {
    /// Starts tracking an outage; logs one warning.
    pub fn begin(what: &str, error: &dyn std::fmt::Display) -> Outage {
        tracing::warn!(%error, "{what}: Redis connection lost; reconnecting");
        Outage {
            since: Instant::now(),
            backoff: Backoff::default(),
        }
    }

    /// How long to wait before the next attempt; `None` once the outage has
    /// lasted `grace` and the loop should give up. The caller waits (so
    /// that it can still notice its client leaving or a shutdown).
    pub fn next_delay(&mut self, grace: Duration) -> Option<Duration> {
        let left = grace.saturating_sub(self.since.elapsed());
        (!left.is_zero()).then(|| self.backoff.next_delay().min(left))
    }

    /// Logs the end of the outage.
    pub fn end(self, what: &str) {
        tracing::info!(after = ?self.since.elapsed(), "{what}: Redis is back; resumed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut backoff = Backoff::default();
        for attempt in 0..40 {
            let delay = backoff.next_delay();
            let cap = MIN_DELAY
                .saturating_mul(1 << attempt.min(16))
                .min(MAX_DELAY);
            assert!(delay <= cap, "attempt {attempt}: {delay:?} > {cap:?}");
        }
    }
}
