//! The byte budget (`--max-buffered-bytes`): request bytes the gateway
//! holds for calls not yet answered, over the whole gateway.
//!
//! Why a budget in bytes: while Redis is slow or stalled, answers stop and
//! whatever the gateway keeps reading piles up in its memory. Counting
//! calls or messages does not bound that (one call can send thousands of
//! 4 MiB messages); counting bytes does. When the budget is used up, a call
//! waits before it lets more of its body through, so the gateway stops
//! reading that client and HTTP/2 flow control pushes back on it, on its
//! side of the network, until answers release bytes.
//!
//! Why a fair share: one flooding call must not take the whole budget and
//! leave every other client waiting behind it. While several calls hold or
//! want bytes, each may grow only up to an equal part of the budget; a call
//! that holds nothing may always take its next message when the budget has
//! room for it, and any call may when nothing at all is held, so every
//! call makes progress.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// What the budget reports to the metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct BudgetMetrics {
    /// Bytes held now.
    pub held: Gauge,
    /// Seconds calls spent waiting for room (summed over calls).
    pub waited: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The gateway's budget; see the module docs.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: usize,
    totals: Mutex<Totals>,
    /// Woken whenever bytes are released.
    freed: Notify,
    metrics: BudgetMetrics,
}

#[derive(Debug, Default)]
struct Totals {
    /// Bytes held by every call.
    held: usize,
    /// Calls that hold bytes or wait for room: the fair share is the
    /// limit divided among them.
    contenders: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize, metrics: BudgetMetrics) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            limit,
            totals: Mutex::default(),
            freed: Notify::new(),
            metrics,
        })
    }

    /// The account of one call.
    pub(crate) fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: self.clone(),
            held: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
        }
    }

    fn totals(&self) -> MutexGuard<'_, Totals> {
        // The totals stay consistent across a panic (every update is a
        // few additions), so a poisoned lock is still usable.
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One call's bytes. Its fields change only under the budget's lock, so
/// the totals always agree with the sum over calls; dropping it releases
/// whatever it still holds.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<ByteBudget>,
    held: AtomicUsize,
    waiting: AtomicBool,
}

impl Share {
    /// Takes `bytes` at once if they fit, else takes nothing.
    pub(crate) fn try_hold(&self, bytes: usize) -> bool {
        let mut totals = self.budget.totals();
        if !self.fits(&totals, bytes) {
            return false;
        }
        self.update(&mut totals, |share| {
            share.held.fetch_add(bytes, Ordering::Relaxed);
        });
        totals.held += bytes;
        self.budget.metrics.held.set(gauge(totals.held));
        true
    }

    /// Waits until `bytes` fit, then takes them.
    pub(crate) async fn hold(&self, bytes: usize) {
        let started = Instant::now();
        let waiting = Waiting(self);
        loop {
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check
            // and the wait still wakes this call.
            freed.as_mut().enable();
            {
                let mut totals = self.budget.totals();
                if self.fits(&totals, bytes) {
                    self.update(&mut totals, |share| {
                        share.held.fetch_add(bytes, Ordering::Relaxed);
                        share.waiting.store(false, Ordering::Relaxed);
                    });
                    totals.held += bytes;
                    self.budget.metrics.held.set(gauge(totals.held));
                    break;
                }
                self.update(&mut totals, |share| {
                    share.waiting.store(true, Ordering::Relaxed);
                });
            }
            freed.await;
        }
        std::mem::forget(waiting);
        self.budget
            .metrics
            .waited
            .inc_by(started.elapsed().as_secs_f64());
    }

    /// Gives `bytes` back (at most what the call holds).
    pub(crate) fn release(&self, bytes: usize) {
        let mut totals = self.budget.totals();
        let bytes = bytes.min(self.held.load(Ordering::Relaxed));
        if bytes == 0 {
            return;
        }
        self.update(&mut totals, |share| {
            share.held.fetch_sub(bytes, Ordering::Relaxed);
        });
        totals.held -= bytes;
        self.budget.metrics.held.set(gauge(totals.held));
        drop(totals);
        self.budget.freed.notify_waiters();
    }

    /// Gives back everything the call holds.
    pub(crate) fn release_all(&self) {
        self.release(usize::MAX);
    }

    /// Whether `bytes` more may be held by this call now.
    fn fits(&self, totals: &Totals, bytes: usize) -> bool {
        if totals.held == 0 {
            return true;
        }
        if totals.held + bytes > self.budget.limit {
            return false;
        }
        let held = self.held.load(Ordering::Relaxed);
        let others = totals.contenders - usize::from(self.contends());
        held == 0 || held + bytes <= self.budget.limit / (others + 1)
    }

    fn contends(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0 || self.waiting.load(Ordering::Relaxed)
    }

    /// Applies `change` to this share and keeps the contender count right.
    fn update(&self, totals: &mut Totals, change: impl FnOnce(&Share)) {
        let before = self.contends();
        change(self);
        match (before, self.contends()) {
            (false, true) => totals.contenders += 1,
            (true, false) => totals.contenders -= 1,
            _ => {}
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Clears a share's waiting mark when its wait is abandoned (the call
/// ended while it waited).
struct Waiting<'a>(&'a Share);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let share = self.0;
        let mut totals = share.budget.totals();
        share.update(&mut totals, |share| {
            share.waiting.store(false, Ordering::Relaxed);
        });
    }
}

fn gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn budget(limit: usize) -> Arc<ByteBudget> {
        ByteBudget::new(limit, BudgetMetrics::default())
    }

    #[test]
    fn a_lone_call_may_fill_the_budget_and_no_more() {
        let budget = budget(100);
        let call = budget.share();
        assert!(call.try_hold(60));
        assert!(call.try_hold(40));
        assert!(!call.try_hold(1));
        call.release(50);
        assert!(call.try_hold(50));
        assert_eq!(budget.metrics.held.get(), 100);
        drop(call);
        assert_eq!(budget.metrics.held.get(), 0);
        assert_eq!(budget.totals().contenders, 0);
    }

    #[test]
    fn an_empty_budget_admits_any_message() {
        let budget = budget(100);
        let call = budget.share();
        assert!(call.try_hold(150));
        assert!(!budget.share().try_hold(1));
    }

    #[test]
    fn a_waiting_call_caps_a_flooding_one_at_half() {
        let budget = budget(100);
        let flood = budget.share();
        assert!(flood.try_hold(90));
        let other = budget.share();
        let mut wait = Box::pin(other.hold(20));
        assert!(wait.as_mut().now_or_never().is_none(), "no room yet");
        // The flood releases some, yet may not grow past half while the
        // other call waits; the other call gets in.
        flood.release(30);
        assert!(!flood.try_hold(1));
        assert!(wait.as_mut().now_or_never().is_some());
        assert_eq!(budget.metrics.held.get(), 80);
        assert_eq!(budget.totals().contenders, 2);
    }

    #[test]
    fn an_abandoned_wait_leaves_no_contender_behind() {
        let budget = budget(100);
        let flood = budget.share();
        assert!(flood.try_hold(100));
        let other = budget.share();
        let mut wait = Box::pin(other.hold(10));
        assert!(wait.as_mut().now_or_never().is_none());
        assert_eq!(budget.totals().contenders, 2);
        drop(wait);
        assert_eq!(budget.totals().contenders, 1);
        flood.release(50);
        assert!(flood.try_hold(50), "alone again: the whole budget");
    }

    #[tokio::test]
    async fn a_release_wakes_the_waiter() {
        let budget = budget(10);
        let first = budget.share();
        assert!(first.try_hold(10));
        let second = Arc::new(budget.share());
        let waiter = tokio::spawn({
            let second = second.clone();
            async move { second.hold(5).await }
        });
        tokio::task::yield_now().await;
        first.release_all();
        waiter.await.unwrap();
        assert_eq!(budget.metrics.held.get(), 5);
    }
}
